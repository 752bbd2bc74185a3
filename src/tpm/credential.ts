import { constants, createCipheriv, createECDH, createHmac, publicEncrypt, randomBytes } from "node:crypto";
import { HASH_ALGS, TPM_ALG } from "./constants.js";
import { tpmError } from "./errors.js";
import { kdfa, kdfe } from "./kdf.js";
import { curveOf, publicKeyFromTpmtPublic } from "./keys.js";
import type { TpmtPublic } from "./structures.js";
import { TpmWriter } from "./wire.js";

export interface MadeCredential {
  /** TPM2B_ID_OBJECT: integrity HMAC and the encrypted credential. */
  credentialBlob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET: the seed, encrypted to the EK. */
  secret: Buffer;
}

/**
 * TPM2_MakeCredential in software (TPM 2.0 Part 1 §24, "Credential Protection"): only the TPM
 * holding `ekPublic`'s private key, with the object named `objectName` loaded, can recover
 * `credential` through TPM2_ActivateCredential. The seed is shared by RSA-OAEP with the label
 * "IDENTITY" (RSA EKs) or by ECDH with an ephemeral key and KDFe (ECC EKs).
 */
export function makeCredential(ekPublic: TpmtPublic, objectName: Buffer, credential: Buffer): MadeCredential {
  const hash = HASH_ALGS[ekPublic.nameAlg];
  if (!hash) throw tpmError("tpm_unsupported_algorithm", "the EK's nameAlg is not supported");
  const sym = ekPublic.symmetric;
  if (sym.algorithm !== TPM_ALG.AES || sym.mode !== TPM_ALG.CFB || !sym.keyBits || ![128, 192, 256].includes(sym.keyBits)) {
    throw tpmError("tpm_unsupported_algorithm", "the EK is not a storage key with AES-CFB");
  }
  if (credential.length > hash.size) throw tpmError("tpm_size_mismatch", "the credential is longer than the EK's name digest");
  const { seed, encryptedSeed } = shareSeed(ekPublic, hash.name, hash.size);

  const symKey = kdfa(hash.name, seed, "STORAGE", objectName, Buffer.alloc(0), sym.keyBits);
  const cipher = createCipheriv(`aes-${sym.keyBits}-cfb`, symKey, Buffer.alloc(16));
  const plain = new TpmWriter().tpm2b(credential).finish();
  const encIdentity = Buffer.concat([cipher.update(plain), cipher.final()]);
  const hmacKey = kdfa(hash.name, seed, "INTEGRITY", Buffer.alloc(0), Buffer.alloc(0), hash.size * 8);
  const outerHmac = createHmac(hash.name, hmacKey).update(encIdentity).update(objectName).digest();
  const idObject = new TpmWriter().tpm2b(outerHmac).bytes(encIdentity).finish();
  return {
    credentialBlob: new TpmWriter().tpm2b(idObject).finish(),
    secret: new TpmWriter().tpm2b(encryptedSeed).finish(),
  };
}

function shareSeed(ek: TpmtPublic, hash: string, size: number): { seed: Buffer; encryptedSeed: Buffer } {
  if (ek.type === TPM_ALG.RSA) {
    const seed = randomBytes(size);
    const encryptedSeed = publicEncrypt(
      { key: publicKeyFromTpmtPublic(ek), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash, oaepLabel: Buffer.from("IDENTITY\0", "ascii") },
      seed,
    );
    return { seed, encryptedSeed };
  }
  const curve = curveOf(ek);
  const ecdh = createECDH(curve.openssl);
  ecdh.generateKeys();
  const pad = (b: Buffer) => Buffer.concat([Buffer.alloc(Math.max(0, curve.size - b.length)), b]);
  const ekPoint = Buffer.concat([Buffer.from([4]), pad(ek.x), pad(ek.y)]);
  let z: Buffer;
  try {
    z = ecdh.computeSecret(ekPoint);
  } catch {
    throw tpmError("tpm_unsupported_algorithm", "the EK's ECC point is not on its curve");
  }
  const eph = ecdh.getPublicKey();
  const ephX = eph.subarray(1, 1 + curve.size);
  const ephY = eph.subarray(1 + curve.size);
  const seed = kdfe(hash, z, "IDENTITY", ephX, pad(ek.x), size * 8);
  return { seed, encryptedSeed: new TpmWriter().tpm2b(ephX).tpm2b(ephY).finish() };
}

/** The file tpm2_makecredential writes and tpm2_activatecredential -i reads: magic, version, then the two TPM2Bs. */
export function tpm2ToolsCredentialFile(made: MadeCredential): Buffer {
  return new TpmWriter().u32(0xbadcc0de).u32(1).bytes(made.credentialBlob).bytes(made.secret).finish();
}
