import type { FastifyRequest } from "fastify";
import type { TLSSocket } from "node:tls";
import { HallmarkError } from "../errors.js";
import { NODE_PROOF_HEADER, NODE_SVID_HEADER, verifyNodeProof } from "../pki/channel-proof.js";
import { type PresentedSvid, normalizeSerial } from "../service/ports.js";

/**
 * The HTTP side of channel-bound node authentication (the protocol: src/pki/channel-proof.ts).
 * A node whose key stays in its TPM sends, on a TLS 1.3 connection without a client certificate,
 * its SVID chain and a signature over the connection's exported keying material.
 *
 * The client sends both headers on every request; the server verifies them once per connection
 * and remembers the result for that socket, as it does for a client certificate. Once per
 * connection is enough: TLS 1.3 has no renegotiation and the exporter value is fixed for the
 * connection's life, so every later request on it comes from the holder of the same TLS session
 * keys that the proof bound to the node's key; the expiry, serial and eviction checks still run
 * on every request (NodeIssuanceService.authenticate). A request whose headers differ from the
 * remembered ones is verified afresh.
 */
interface Remembered {
  svidHeader: string;
  proofHeader: string;
  presented: PresentedSvid;
}
const verified = new WeakMap<object, Remembered>();

/** Whether the request carries either proof header (then it is judged as a proof, never as anonymous). */
export function carriesNodeProof(request: FastifyRequest): boolean {
  return request.headers[NODE_SVID_HEADER] !== undefined || request.headers[NODE_PROOF_HEADER] !== undefined;
}

/** The SVID a node proof presents, verified at `now` against the trust bundle's certificates. */
export async function provenSvid(request: FastifyRequest, now: Date, anchors: () => Promise<readonly Uint8Array[]>): Promise<PresentedSvid> {
  const svidHeader = request.headers[NODE_SVID_HEADER];
  const proofHeader = request.headers[NODE_PROOF_HEADER];
  if (typeof svidHeader !== "string" || typeof proofHeader !== "string") {
    throw new HallmarkError("node_proof_invalid", `a node proof needs exactly one ${NODE_SVID_HEADER} and one ${NODE_PROOF_HEADER} header`);
  }
  const socket = request.raw.socket as Partial<TLSSocket>;
  if (typeof socket.exportKeyingMaterial !== "function" || socket.getProtocol?.() !== "TLSv1.3") {
    throw new HallmarkError("node_proof_requires_tls13", "node proofs are accepted on TLS 1.3 only: the TLS 1.2 exporter is not bound to one connection without extended master secret");
  }
  const cert = socket.getPeerCertificate?.();
  if (cert && Object.keys(cert).length > 0) {
    throw new HallmarkError("node_proof_conflict", "send either a client certificate or a node proof, not both");
  }
  const known = verified.get(socket);
  if (known && known.svidHeader === svidHeader && known.proofHeader === proofHeader) return known.presented;
  const proven = verifyNodeProof({
    svidHeader,
    proofHeader,
    anchors: await anchors(),
    at: now,
    exporter: (length, label, context) => socket.exportKeyingMaterial!(length, label, context),
  });
  const presented: PresentedSvid = { spiffeId: proven.spiffeId, serial: normalizeSerial(proven.serialHex), notBefore: proven.notBefore, notAfter: proven.notAfter };
  verified.set(socket, { svidHeader, proofHeader, presented });
  return presented;
}
