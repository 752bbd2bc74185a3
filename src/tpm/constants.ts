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

export const TPM_ECC_CURVE = { NIST_P256: 0x0003, NIST_P384: 0x0004, NIST_P521: 0x0005 } as const;

/** The curves Hallmark accepts in a TPMT_PUBLIC: the JOSE name, the coordinate size, OpenSSL's name. */
export const ECC_CURVES: Record<number, { crv: "P-256" | "P-384" | "P-521"; size: number; openssl: string }> = {
  [TPM_ECC_CURVE.NIST_P256]: { crv: "P-256", size: 32, openssl: "prime256v1" },
  [TPM_ECC_CURVE.NIST_P384]: { crv: "P-384", size: 48, openssl: "secp384r1" },
  [TPM_ECC_CURVE.NIST_P521]: { crv: "P-521", size: 66, openssl: "secp521r1" },
};

/** RSA key sizes accepted in a TPMT_PUBLIC: 1024-bit keys are too weak to certify anything. */
export const RSA_KEY_BITS: readonly number[] = [2048, 3072, 4096];

/** AES key sizes for a storage key's TPMT_SYM_DEF_OBJECT (the EK's, which MakeCredential uses). */
export const AES_KEY_BITS: readonly number[] = [128, 192, 256];

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
  x509sign: 1 << 19,
} as const;

/**
 * The bits of TPMA_OBJECT that Part 2 (rev 1.59, Table 31) reserves: 0, 3, 8-9, 12-15 and 20-31.
 * A TPM never sets them (TPM2_Create refuses them with TPM_RC_RESERVED_BITS), so a public area
 * carrying one was not made by a TPM. Rev 1.83 gives bits 8 and 9 to firmwareLimited and
 * svnLimited (keys of the new firmware-bound hierarchies); until a TPM we must accept uses them,
 * they stay refused.
 */
export const TPMA_OBJECT_RESERVED = 0xfff0f309;

/** TPM_GENERATED_VALUE: every TPMS_ATTEST the TPM signs starts with it ("\xffTCG"). */
export const TPM_GENERATED_VALUE = 0xff544347;

export const HASH_ALGS: Record<number, { name: "sha1" | "sha256" | "sha384" | "sha512"; size: number }> = {
  [TPM_ALG.SHA1]: { name: "sha1", size: 20 },
  [TPM_ALG.SHA256]: { name: "sha256", size: 32 },
  [TPM_ALG.SHA384]: { name: "sha384", size: 48 },
  [TPM_ALG.SHA512]: { name: "sha512", size: 64 },
};

export const BANK_NAMES: Record<string, number> = { sha1: TPM_ALG.SHA1, sha256: TPM_ALG.SHA256, sha384: TPM_ALG.SHA384, sha512: TPM_ALG.SHA512 };
