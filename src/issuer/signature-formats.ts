import { HallmarkError } from "../errors.js";
import type { KeyType, SignatureScheme } from "../hsm/signer.js";
import { type Der, OID, explicit, nullValue, oid, sequence, smallInteger, unsignedInteger } from "./der.js";

/**
 * Everything about one signature scheme in one table: the X.509 AlgorithmIdentifier, the JWS
 * `alg`, and whether the signer's raw output needs wrapping for X.509 (ECDSA r||s → DER).
 */
interface SchemeInfo {
  jwsAlg: string;
  algorithmIdentifier: () => Der;
  ecdsa: boolean;
}

const pssParams = (hashOid: string, saltLength: number): Der =>
  sequence(
    explicit(0, sequence(oid(hashOid), nullValue())),
    explicit(1, sequence(oid(OID.mgf1), sequence(oid(hashOid), nullValue()))),
    explicit(2, smallInteger(saltLength)),
  );

export const SCHEMES: Record<SignatureScheme, SchemeInfo> = {
  "ecdsa-sha256": { jwsAlg: "ES256", ecdsa: true, algorithmIdentifier: () => sequence(oid(OID.ecdsaWithSha256)) },
  "ecdsa-sha384": { jwsAlg: "ES384", ecdsa: true, algorithmIdentifier: () => sequence(oid(OID.ecdsaWithSha384)) },
  "rsa-pkcs1-sha256": { jwsAlg: "RS256", ecdsa: false, algorithmIdentifier: () => sequence(oid(OID.sha256WithRsa), nullValue()) },
  "rsa-pkcs1-sha384": { jwsAlg: "RS384", ecdsa: false, algorithmIdentifier: () => sequence(oid(OID.sha384WithRsa), nullValue()) },
  "rsa-pss-sha256": { jwsAlg: "PS256", ecdsa: false, algorithmIdentifier: () => sequence(oid(OID.rsassaPss), pssParams(OID.sha256, 32)) },
  "rsa-pss-sha384": { jwsAlg: "PS384", ecdsa: false, algorithmIdentifier: () => sequence(oid(OID.rsassaPss), pssParams(OID.sha384, 48)) },
};

/** The scheme a CA key of this type signs certificates with. */
export function x509SchemeFor(keyType: KeyType): SignatureScheme {
  switch (keyType) {
    case "ec-p256":
      return "ecdsa-sha256";
    case "ec-p384":
      return "ecdsa-sha384";
    default:
      return "rsa-pkcs1-sha256";
  }
}

/** The JWS scheme for a JWT key: ES256/ES384 for EC keys, RS256 or PS256 for RSA keys. */
export function jwtSchemeFor(keyType: KeyType, rsaPadding: "pkcs1" | "pss" = "pkcs1"): SignatureScheme {
  if (keyType === "ec-p256") return "ecdsa-sha256";
  if (keyType === "ec-p384") return "ecdsa-sha384";
  return rsaPadding === "pss" ? "rsa-pss-sha256" : "rsa-pkcs1-sha256";
}

/** IEEE P1363 r||s (what PKCS#11 and JWS use) → DER ECDSA-Sig-Value (what X.509 uses). */
export function rawEcdsaToDer(raw: Uint8Array): Buffer {
  if (raw.length === 0 || raw.length % 2 !== 0) throw new HallmarkError("hsm_error", "malformed ECDSA signature from the signer");
  const half = raw.length / 2;
  return sequence(unsignedInteger(raw.subarray(0, half)), unsignedInteger(raw.subarray(half)));
}

/** The signatureValue bytes for X.509 from what a Signer returned. */
export function x509SignatureValue(scheme: SignatureScheme, raw: Uint8Array): Buffer {
  return SCHEMES[scheme].ecdsa ? rawEcdsaToDer(raw) : Buffer.from(raw);
}
