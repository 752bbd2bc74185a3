import type { KeyObject } from "node:crypto";

/**
 * The signer seam. Everything that signs (the X.509 CA, the JWT-SVID issuer, an upstream CA)
 * sees only this; only src/hsm knows PKCS#11. An HSM signer never holds private key bytes.
 */

/** `ed25519` signs only with the "ed25519" scheme: the transparency log's signed notes, never X.509 or JWS. */
export type KeyType = "ec-p256" | "ec-p384" | "rsa-2048" | "rsa-3072" | "ed25519";

/** How to sign: the signer hashes `data` itself (SoftHSM lacks CKM_ECDSA_SHA256). */
export type SignatureScheme =
  | "ecdsa-sha256"
  | "ecdsa-sha384"
  | "rsa-pkcs1-sha256"
  | "rsa-pkcs1-sha384"
  | "rsa-pss-sha256"
  | "rsa-pss-sha384";

/**
 * Pure Ed25519 (RFC 8032): the token signs the whole message, with no hash outside. Kept apart
 * from SignatureScheme, whose every member X.509 and JWS can name (signature-formats.ts).
 */
export type PureSignatureScheme = "ed25519";

export interface Signer {
  /** Token label (or file path for a software signer); how the key is found again. */
  readonly label: string;
  readonly keyType: KeyType;
  /** The public half, for certificates, bundles and verification. */
  readonly publicKey: KeyObject;
  /**
   * Signs `data` (the message, not a digest). ECDSA signatures come back as raw r||s
   * (IEEE P1363, what PKCS#11 returns and JWS wants); RSA signatures as the modulus-sized octets;
   * Ed25519 signatures as the 64 bytes of RFC 8032.
   */
  sign(data: Uint8Array, scheme: SignatureScheme | PureSignatureScheme): Promise<Uint8Array>;
}

/** One key object in the token, as a start-up reconciliation sees it: never key material. */
export interface StoredKeyObject {
  label: string;
  objectClass: "public-key" | "private-key";
}

export interface KeyStore {
  /** Generates a non-extractable, sensitive key pair in the token under `label`. */
  generate(label: string, keyType: KeyType): Promise<Signer>;
  /**
   * Finds a key pair by label after a restart; undefined when absent. `recorded`: the caller's
   * records say the key exists (another process may have just made it), so a store whose view of
   * the token can go stale reads the token again before answering undefined.
   */
  find(label: string, o?: { recorded?: boolean }): Promise<Signer | undefined>;
  /** Destroys both halves of the key pair under `label` (retired keys), or the one half there is. */
  destroy(label: string): Promise<void>;
  /** Every public and private key object whose label starts with `prefix`, each half on its own (a half pair shows as one). */
  listKeyObjects(prefix: string): Promise<StoredKeyObject[]>;
  /**
   * How many objects of any class carry an empty label. An HSM may leave such shells behind
   * when killed inside its own object creation (SoftHSM2 writes an object's defaults before our
   * template); nothing in them says whose they are.
   */
  countUnlabelledObjects(): Promise<number>;
  close(): Promise<void>;
}

/** What each scheme means, in one table for every Signer implementation. */
export const SCHEME_PARAMETERS: Record<
  SignatureScheme,
  { hash: "sha256" | "sha384"; family: "ecdsa" | "pkcs1" | "pss"; saltLength?: number }
> = {
  "ecdsa-sha256": { hash: "sha256", family: "ecdsa" },
  "ecdsa-sha384": { hash: "sha384", family: "ecdsa" },
  "rsa-pkcs1-sha256": { hash: "sha256", family: "pkcs1" },
  "rsa-pkcs1-sha384": { hash: "sha384", family: "pkcs1" },
  "rsa-pss-sha256": { hash: "sha256", family: "pss", saltLength: 32 },
  "rsa-pss-sha384": { hash: "sha384", family: "pss", saltLength: 48 },
};
