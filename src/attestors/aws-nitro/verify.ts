import { verify as cryptoVerify } from "node:crypto";
import { encodeCbor } from "../../cbor/encode.js";
import { validateChain } from "../../pki/chain.js";
import { parseCertificate, sha256Fingerprint } from "../../pki/certificate.js";
import type { NitroDocument } from "./document.js";
import { nitroError } from "./errors.js";

const ES384 = -35;
const SIGNATURE_LENGTH = 96;

export interface VerifiedNitroDocument {
  rootFingerprint: string;
}

interface CachedChain {
  rootFingerprint: string;
  /** The window in which every certificate of the path is valid. */
  from: number;
  to: number;
}

/**
 * Chain validation is cached per (leaf, cabundle): an enclave's documents share their chain for
 * hours. The cache stores the path's common validity window, so a cached chain is still refused
 * at a time outside it. The COSE signature is checked every time.
 */
const chainCache = new Map<string, CachedChain>();
const CACHE_LIMIT = 4096;

export function verifyNitroDocument(doc: NitroDocument, o: { anchors: readonly Uint8Array[] }): VerifiedNitroDocument {
  if (doc.alg !== ES384) throw nitroError("nitro_unsupported_algorithm", `COSE alg ${doc.alg} is not ES384 (-35)`);
  if (doc.digest !== "SHA384") throw nitroError("nitro_unsupported_digest", `digest '${doc.digest.slice(0, 16)}' is not SHA384`);
  const chain = verifiedChain(doc, o.anchors);
  if (doc.signature.length !== SIGNATURE_LENGTH) throw nitroError("nitro_signature_invalid", "the COSE signature is not 96 bytes (ES384 r||s)");
  // COSE_Sign1 Sig_structure (RFC 9052 §4.4): ["Signature1", protected, external_aad = h'', payload].
  const toBeSigned = encodeCbor(["Signature1", doc.protectedRaw, new Uint8Array(0), doc.payloadRaw]);
  const leafKey = chain.leafKey;
  let ok = false;
  try {
    // Real AWS documents carry high-S signatures: no low-S rule here (node:crypto does not impose one).
    ok = cryptoVerify("sha384", toBeSigned, { key: leafKey, dsaEncoding: "ieee-p1363" }, doc.signature);
  } catch {
    ok = false;
  }
  if (!ok) throw nitroError("nitro_signature_invalid", "the COSE signature does not verify with the document's certificate");
  return { rootFingerprint: chain.rootFingerprint };
}

function verifiedChain(doc: NitroDocument, anchors: readonly Uint8Array[]) {
  const key = [doc.certificate, ...doc.cabundle, ...anchors].map(sha256Fingerprint).join(".");
  const at = doc.timestamp.getTime();
  const cached = chainCache.get(key);
  if (cached && at >= cached.from && at <= cached.to) {
    // parseCertificate memoises: this is a lookup, not a parse.
    return { rootFingerprint: cached.rootFingerprint, leafKey: parseCertificate(doc.certificate).publicKey };
  }
  const v = validateChain({ leaf: doc.certificate, intermediates: doc.cabundle, anchors, at: doc.timestamp });
  const entry: CachedChain = {
    rootFingerprint: v.anchorFingerprint,
    from: Math.max(...v.path.map((c) => c.notBefore.getTime())),
    to: Math.min(...v.path.map((c) => c.notAfter.getTime())),
  };
  if (chainCache.size >= CACHE_LIMIT) chainCache.clear();
  chainCache.set(key, entry);
  return { rootFingerprint: entry.rootFingerprint, leafKey: v.path[0]!.publicKey };
}
