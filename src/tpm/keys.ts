import { type KeyObject, constants, createHash, createPublicKey, verify } from "node:crypto";
import { ECC_CURVES, HASH_ALGS, TPM_ALG } from "./constants.js";
import { tpmError } from "./errors.js";
import type { TpmtPublic, TpmtSignature } from "./structures.js";

export function curveOf(p: Extract<TpmtPublic, { type: typeof TPM_ALG.ECC }>): (typeof ECC_CURVES)[number] {
  const c = ECC_CURVES[p.curveId];
  if (!c) throw tpmError("tpm_public_unknown_curve", `ECC curve 0x${p.curveId.toString(16)} is not supported`);
  return c;
}

/** Coordinate size of a KeyObject's curve, for the r and s of an ECDSA signature. */
function coordinateSize(key: KeyObject): number | undefined {
  const named = key.asymmetricKeyDetails?.namedCurve;
  return Object.values(ECC_CURVES).find((c) => c.openssl === named)?.size;
}

/** The node KeyObject of a TPM public area (RSA: exponent 0 means 65537). */
export function publicKeyFromTpmtPublic(p: TpmtPublic): KeyObject {
  try {
    if (p.type === TPM_ALG.RSA) {
      const e = Buffer.alloc(4);
      e.writeUInt32BE(p.exponent === 0 ? 65537 : p.exponent);
      const start = e.findIndex((b) => b !== 0);
      return createPublicKey({ key: { kty: "RSA", n: p.modulus.toString("base64url"), e: e.subarray(start).toString("base64url") }, format: "jwk" });
    }
    const c = curveOf(p);
    const pad = (b: Buffer) => Buffer.concat([Buffer.alloc(Math.max(0, c.size - b.length)), b]);
    return createPublicKey({ key: { kty: "EC", crv: c.crv, x: pad(p.x).toString("base64url"), y: pad(p.y).toString("base64url") }, format: "jwk" });
  } catch (e) {
    if ((e as { name?: string }).name === "HallmarkError") throw e;
    throw tpmError("tpm_unsupported_algorithm", "the TPM public key is not a valid RSA or ECC key");
  }
}

export function spkiOf(p: TpmtPublic): Buffer {
  return publicKeyFromTpmtPublic(p).export({ type: "spki", format: "der" });
}

/** Verifies a TPMT_SIGNATURE over `message` (the TPM signs the hash of the attestation bytes). */
export function verifyTpmSignature(key: KeyObject, sig: TpmtSignature, message: Buffer): boolean {
  const hash = HASH_ALGS[sig.hashAlg]?.name;
  if (!hash) return false;
  try {
    if (sig.sigAlg === TPM_ALG.ECDSA && sig.ecc) {
      const size = coordinateSize(key);
      if (!size || sig.ecc.r.length > size || sig.ecc.s.length > size) return false;
      const pad = (b: Buffer) => Buffer.concat([Buffer.alloc(size - b.length), b]);
      return verify(hash, message, { key, dsaEncoding: "ieee-p1363" }, Buffer.concat([pad(sig.ecc.r), pad(sig.ecc.s)]));
    }
    if (sig.sigAlg === TPM_ALG.RSASSA && sig.rsa) return verify(hash, message, { key, padding: constants.RSA_PKCS1_PADDING }, sig.rsa);
    if (sig.sigAlg === TPM_ALG.RSAPSS && sig.rsa) {
      // TPMs use the largest salt or the digest length; AUTO accepts either.
      return verify(hash, message, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, sig.rsa);
    }
  } catch {
    return false;
  }
  return false;
}

/** An object's Name (Part 1 §16): nameAlg || H_nameAlg(TPMT_PUBLIC as received). */
export function objectName(p: TpmtPublic): Buffer {
  const h = HASH_ALGS[p.nameAlg]!;
  const alg = Buffer.alloc(2);
  alg.writeUInt16BE(p.nameAlg);
  return Buffer.concat([alg, createHash(h.name).update(p.raw).digest()]);
}
