import { createHash, verify } from "node:crypto";
import { HallmarkError, isHallmarkError } from "../errors.js";
import { parseCertificate } from "./certificate.js";
import { validateChain } from "./chain.js";

/**
 * Channel-bound node authentication, for a node whose key cannot sign a TLS handshake (a
 * TPM-resident key: Node's TLS takes only software keys). The node sends its SVID chain and a
 * signature, made by the SVID's key, over the connection's TLS exporter value (RFC 5705 /
 * RFC 8446 §7.5):
 *
 *   ekm = exportKeyingMaterial(32, NODE_PROOF_LABEL, SHA-256(leaf DER))
 *   proof = Sign(SVID key, ekm)   (ECDSA P-256 with SHA-256, DER; or RSA PKCS#1 v1.5 with SHA-256)
 *
 * Both ends derive the same ekm from the handshake's secrets and transcript; a man in the middle
 * (two TLS connections) gets two different values, and another connection of the same node gets
 * another value, so a proof works on the one connection it was made for. The context binds the
 * proof to the leaf it is sent with. TLS 1.3 only: its exporter hashes the whole handshake, while
 * the TLS 1.2 exporter without extended master secret (RFC 7627) can be equal on two connections
 * (the triple-handshake attack), and Node cannot tell us whether EMS was negotiated.
 */
export const NODE_PROOF_LABEL = "EXPORTER-hallmark-node-auth";
export const NODE_PROOF_EKM_BYTES = 32;
/** Base64 DER certificates, leaf first, separated by commas (like JWS x5c). */
export const NODE_SVID_HEADER = "hallmark-node-svid";
/** Base64 of the signature over the exporter value. */
export const NODE_PROOF_HEADER = "hallmark-node-proof";

/** The TLS exporter of one connection (TLSSocket.exportKeyingMaterial). */
export type KeyingMaterialExporter = (length: number, label: string, context: Buffer) => Buffer;

/** The exporter value a proof signs, for a connection and the leaf sent with it. */
export function nodeProofMessage(exporter: KeyingMaterialExporter, leafDer: Uint8Array): Buffer {
  return exporter(NODE_PROOF_EKM_BYTES, NODE_PROOF_LABEL, createHash("sha256").update(leafDer).digest());
}

/** The identity a verified proof presents: the same fields as a verified client certificate. */
export interface ProvenSvid {
  spiffeId: string;
  /** As X509Certificate.serialNumber spells it (the caller normalises it like a client certificate's). */
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * Verifies a node proof: the chain (parsed from the header) must lead to one of the trust
 * bundle's certificates, the leaf must be an end-entity certificate with exactly one URI SAN, and
 * the signature must verify over this connection's exporter value with the leaf's key.
 *
 * The leaf's own validity period is not judged here but by the node service, like a client
 * certificate's: an expired SVID is refused there as node_svid_expired, with the same code on
 * both paths. The chain is therefore checked at `at` clamped into the leaf's validity window.
 */
export function verifyNodeProof(i: {
  svidHeader: string;
  proofHeader: string;
  anchors: readonly Uint8Array[];
  at: Date;
  exporter: KeyingMaterialExporter;
}): ProvenSvid {
  const chain = decodeChain(i.svidHeader);
  const leaf = parseOrRefuse(chain[0]!);
  const at = new Date(Math.min(Math.max(i.at.getTime(), leaf.notBefore.getTime()), leaf.notAfter.getTime()));
  try {
    // The URI SAN of an SVID is critical when its subject is empty; it is read below.
    validateChain({ leaf: chain[0]!, intermediates: chain.slice(1), anchors: i.anchors, at, handledCriticalExtensions: ["2.5.29.17"] });
  } catch (e) {
    if (!isHallmarkError(e)) throw e;
    throw new HallmarkError("node_proof_svid_invalid", `the SVID chain does not verify against the trust bundle (${e.code}: ${e.message})`);
  }
  if (leaf.basicConstraints?.ca) throw new HallmarkError("node_proof_svid_invalid", "the SVID is a CA certificate");
  const uris = (leaf.node.subjectAltName ?? "")
    .split(", ")
    .filter((s) => s.startsWith("URI:"))
    .map((s) => s.slice(4));
  if (uris.length !== 1 || !uris[0]) throw new HallmarkError("node_proof_svid_invalid", "the SVID must carry exactly one URI SAN");

  const signature = decodeBase64(i.proofHeader, "node_proof_invalid", "the node proof is not base64");
  let ok: boolean;
  try {
    ok = verify("sha256", nodeProofMessage(i.exporter, leaf.der), leaf.publicKey, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new HallmarkError("node_proof_invalid", "the node proof does not verify over this connection's exported keying material with the SVID's key");
  return { spiffeId: uris[0], serialHex: leaf.node.serialNumber, notBefore: leaf.notBefore, notAfter: leaf.notAfter };
}

/** A header of at most 8 certificates, each base64 DER. */
function decodeChain(header: string): Buffer[] {
  const parts = header.split(",").map((p) => p.trim());
  if (parts.length === 0 || parts.length > 8 || parts.some((p) => p.length === 0)) {
    throw new HallmarkError("node_proof_svid_invalid", "the SVID header must list 1 to 8 base64 DER certificates, leaf first, comma-separated");
  }
  return parts.map((p) => decodeBase64(p, "node_proof_svid_invalid", "a certificate in the SVID header is not base64"));
}

function parseOrRefuse(der: Buffer) {
  try {
    return parseCertificate(der);
  } catch {
    throw new HallmarkError("node_proof_svid_invalid", "the SVID in the header cannot be parsed");
  }
}

function decodeBase64(text: string, code: string, why: string): Buffer {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) throw new HallmarkError(code, why);
  return Buffer.from(text, "base64");
}
