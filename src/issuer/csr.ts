import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { type KeyObject, constants, createPublicKey, verify } from "node:crypto";
import { pemBlocks } from "../api/pem.js";
import { HallmarkError } from "../errors.js";
import { oid, readTlv } from "./der.js";

export interface ParsedCsr {
  spki: Buffer;
  publicKey: KeyObject;
  keyType: "ec-p256" | "ec-p384" | "rsa";
  uriSans: string[];
  dnsSans: string[];
}

export const MAX_CSR_BYTES = 8 * 1024;

/** CSR signature algorithms accepted: OID DER → how node:crypto verifies it. */
const SIGNATURE_ALGORITHMS: Array<{ oid: Buffer; hash: string; pss?: boolean }> = [
  { oid: oid("1.2.840.10045.4.3.2"), hash: "sha256" },
  { oid: oid("1.2.840.10045.4.3.3"), hash: "sha384" },
  { oid: oid("1.2.840.10045.4.3.4"), hash: "sha512" },
  { oid: oid("1.2.840.113549.1.1.11"), hash: "sha256" },
  { oid: oid("1.2.840.113549.1.1.12"), hash: "sha384" },
  { oid: oid("1.2.840.113549.1.1.13"), hash: "sha512" },
];

const malformed = (why: string) => new HallmarkError("csr_malformed", `the CSR cannot be parsed: ${why}`);

/**
 * Parses a PKCS#10 CSR (PEM or DER) from an untrusted caller and checks what issuance relies on:
 * proof of possession (its signature, verified over the exact bytes received), an accepted key
 * (EC P-256/P-384, RSA 2048-4096), and that it does not ask to be a CA.
 */
export function parseCsr(input: string | Uint8Array, maxBytes = MAX_CSR_BYTES): ParsedCsr {
  const der = toDer(input, maxBytes);
  const outer = readTlv(der, 0);
  if (!outer || outer.tag !== 0x30 || outer.end !== der.length) throw malformed("not a DER SEQUENCE, or trailing bytes");
  const info = readTlv(der, outer.start);
  const alg = info && readTlv(der, info.end);
  const sig = alg && readTlv(der, alg.end);
  if (!info || info.tag !== 0x30 || !alg || alg.tag !== 0x30 || !sig || sig.tag !== 0x03 || sig.end !== outer.end) {
    throw malformed("unexpected structure");
  }
  let req: x509.Pkcs10CertificateRequest;
  try {
    req = new x509.Pkcs10CertificateRequest(der);
  } catch {
    throw malformed("invalid PKCS#10 structure");
  }

  const spki = Buffer.from(req.publicKey.rawData);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: spki, format: "der", type: "spki" });
  } catch {
    throw new HallmarkError("csr_key_unsupported", "the CSR's public key is not a supported key");
  }
  const keyType = acceptedKeyType(publicKey);

  const algOid = readTlv(der, alg.start);
  const algorithm = algOid && SIGNATURE_ALGORITHMS.find((a) => a.oid.equals(der.subarray(algOid.headerStart, algOid.end)));
  if (!algorithm) throw new HallmarkError("csr_signature_invalid", "the CSR's signature algorithm is not accepted");
  const signature = der.subarray(sig.start + 1, sig.end);
  const signed = der.subarray(info.headerStart, info.end);
  const ok = (() => {
    try {
      return verify(algorithm.hash, signed, keyType === "rsa" ? { key: publicKey, padding: constants.RSA_PKCS1_PADDING } : publicKey, signature);
    } catch {
      return false;
    }
  })();
  if (!ok) throw new HallmarkError("csr_signature_invalid", "the CSR's signature does not verify (no proof of possession)");

  let uriSans: string[] = [];
  let dnsSans: string[] = [];
  try {
    const bcRaw = req.getExtension("2.5.29.19");
    const kuRaw = req.getExtension("2.5.29.15");
    const sanRaw = req.getExtension("2.5.29.17");
    const bc = bcRaw && new x509.BasicConstraintsExtension(bcRaw.rawData);
    const ku = kuRaw && new x509.KeyUsagesExtension(kuRaw.rawData);
    if (bc?.ca || (ku && ku.usages & (x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign))) {
      throw new HallmarkError("csr_requests_ca", "the CSR asks for a CA certificate");
    }
    const names = sanRaw ? new x509.SubjectAlternativeNameExtension(sanRaw.rawData).names.items : [];
    uriSans = names.filter((n) => n.type === "url").map((n) => n.value);
    dnsSans = names.filter((n) => n.type === "dns").map((n) => n.value);
  } catch (e) {
    if (e instanceof HallmarkError) throw e;
    throw malformed("invalid extension request");
  }
  return { spki, publicKey, keyType, uriSans, dnsSans };
}

function toDer(input: string | Uint8Array, maxBytes: number): Buffer {
  if (typeof input !== "string") {
    if (input.length > maxBytes) throw malformed(`larger than ${maxBytes} bytes`);
    return Buffer.from(input);
  }
  if (input.length > maxBytes * 2) throw malformed(`larger than ${maxBytes} bytes`);
  const blocks = [...pemBlocks(input, "CERTIFICATE REQUEST"), ...pemBlocks(input, "NEW CERTIFICATE REQUEST")];
  if (blocks.length !== 1 || !blocks[0] || blocks[0].length === 0) throw malformed("expected exactly one PEM 'CERTIFICATE REQUEST' block");
  if (blocks[0].length > maxBytes) throw malformed(`larger than ${maxBytes} bytes`);
  return blocks[0];
}

function acceptedKeyType(key: KeyObject): ParsedCsr["keyType"] {
  const d = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === "ec" && d.namedCurve === "prime256v1") return "ec-p256";
  if (key.asymmetricKeyType === "ec" && d.namedCurve === "secp384r1") return "ec-p384";
  if (key.asymmetricKeyType === "rsa" && (d.modulusLength ?? 0) >= 2048 && (d.modulusLength ?? 0) <= 4096) return "rsa";
  throw new HallmarkError("csr_key_unsupported", "accepted keys are EC P-256, EC P-384 and RSA 2048-4096");
}
