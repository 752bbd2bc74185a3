/** TPM 2.0 constants used by Hallmark (TCG TPM 2.0 Library, Part 2: Structures). */
export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  KDF1_SP800_56A: 0x0020,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CFB: 0x0043,
} as const;

export const TPM_ECC_CURVE = { NIST_P256: 0x0003, NIST_P384: 0x0004 } as const;

export const TPM_ST = { ATTEST_CERTIFY: 0x8017, ATTEST_QUOTE: 0x8018 } as const;

/** TPMA_OBJECT (Part 2 §8.3). */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

/** TPM_GENERATED_VALUE: every TPMS_ATTEST the TPM signs starts with it ("\xffTCG"). */
export const TPM_GENERATED_VALUE = 0xff544347;

export const HASH_ALGS: Record<number, { name: "sha1" | "sha256" | "sha384" | "sha512"; size: number }> = {
  [TPM_ALG.SHA1]: { name: "sha1", size: 20 },
  [TPM_ALG.SHA256]: { name: "sha256", size: 32 },
  [TPM_ALG.SHA384]: { name: "sha384", size: 48 },
  [TPM_ALG.SHA512]: { name: "sha512", size: 64 },
};

export const BANK_NAMES: Record<string, number> = { sha1: TPM_ALG.SHA1, sha256: TPM_ALG.SHA256, sha384: TPM_ALG.SHA384, sha512: TPM_ALG.SHA512 };
