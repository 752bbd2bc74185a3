import { verify as cryptoVerify } from "node:crypto";
import { encodeCbor } from "../../cbor/encode.js";
import { validateChainCached } from "../../pki/chain-cache.js";
import type { NitroDocument } from "./document.js";
import { nitroError } from "./errors.js";

const ES384 = -35;
const SIGNATURE_LENGTH = 96;

export interface VerifiedNitroDocument {
  rootFingerprint: string;
}

/**
 * The document's chain (cabundle + certificate) to a pinned root at the document's own time, then
 * the COSE_Sign1 signature with the leaf key, over the exact bytes received.
 */
export function verifyNitroDocument(doc: NitroDocument, o: { anchors: readonly Uint8Array[] }): VerifiedNitroDocument {
  if (doc.alg !== ES384) throw nitroError("nitro_unsupported_algorithm", `COSE alg ${doc.alg} is not ES384 (-35)`);
  if (doc.digest !== "SHA384") throw nitroError("nitro_unsupported_digest", `digest '${doc.digest.slice(0, 16)}' is not SHA384`);
  const chain = validateChainCached({ leaf: doc.certificate, intermediates: doc.cabundle, anchors: o.anchors, at: doc.timestamp });
  if (doc.signature.length !== SIGNATURE_LENGTH) throw nitroError("nitro_signature_invalid", "the COSE signature is not 96 bytes (ES384 r||s)");
  // COSE_Sign1 Sig_structure (RFC 9052 §4.4): ["Signature1", protected, external_aad = h'', payload].
  const toBeSigned = encodeCbor(["Signature1", doc.protectedRaw, new Uint8Array(0), doc.payloadRaw]);
  let ok = false;
  try {
    // Real AWS documents carry high-S signatures: no low-S rule here (node:crypto imposes none).
    ok = cryptoVerify("sha384", toBeSigned, { key: chain.path[0]!.publicKey, dsaEncoding: "ieee-p1363" }, doc.signature);
  } catch {
    ok = false;
  }
  if (!ok) throw nitroError("nitro_signature_invalid", "the COSE signature does not verify with the document's certificate");
  return { rootFingerprint: chain.anchorFingerprint };
}
