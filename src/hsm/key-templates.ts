import { type KeyObject, createPublicKey } from "node:crypto";
import { HallmarkError } from "../errors.js";
import type { KeyType } from "./signer.js";
import { type Handle, type Pkcs11, pkcs11js } from "./pkcs11-module.js";

/** DER of the named-curve OIDs (CKA_EC_PARAMS): P-256 1.2.840.10045.3.1.7, P-384 1.3.132.0.34. */
const EC_PARAMS: Record<string, { der: Buffer; crv: string; size: number }> = {
  "ec-p256": { der: Buffer.from("06082a8648ce3d030107", "hex"), crv: "P-256", size: 32 },
  "ec-p384": { der: Buffer.from("06052b81040022", "hex"), crv: "P-384", size: 48 },
};
const RSA_BITS: Record<string, number> = { "rsa-2048": 2048, "rsa-3072": 3072 };
/**
 * Ed25519 (PKCS#11 3.0 CKK_EC_EDWARDS), with codes pkcs11js does not name. CKA_EC_PARAMS is the
 * PrintableString "edwards25519", which SoftHSM2 2.6 takes; the RFC 8410 OID 1.3.101.112 is
 * also accepted when reading a key back, as other tokens write it.
 */
export const CKK_EC_EDWARDS = 0x40;
export const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
export const CKM_EDDSA = 0x1057;
const ED25519_PARAMS = Buffer.concat([Buffer.from([0x13, 0x0c]), Buffer.from("edwards25519", "ascii")]);
const ED25519_OID = Buffer.from("06032b6570", "hex");
const ED25519_PUBLIC_KEY_SIZE = 32;
const F4 = Buffer.from([0x01, 0x00, 0x01]);

export function isEcKeyType(t: KeyType): boolean {
  return t in EC_PARAMS;
}

/** Byte length of a raw signature: r||s for ECDSA, the modulus for RSA, 64 for Ed25519. */
export function signatureLength(t: KeyType): number {
  if (t === "ed25519") return 64;
  const ec = EC_PARAMS[t];
  return ec ? ec.size * 2 : (RSA_BITS[t] ?? 0) / 8;
}

/**
 * Templates for a CA key pair. The private half is a token object, private, sensitive and not
 * extractable: it can sign and nothing else, and its value can never be read out.
 */
export function keyPairTemplates(keyType: KeyType, label: string, id: Buffer) {
  const common = [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: id },
  ];
  const ec = EC_PARAMS[keyType];
  const publicKey = [
    ...common,
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_VERIFY, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    ...(keyType === "ed25519"
      ? [
          { type: pkcs11js.CKA_KEY_TYPE, value: CKK_EC_EDWARDS },
          { type: pkcs11js.CKA_EC_PARAMS, value: ED25519_PARAMS },
        ]
      : ec
      ? [
          { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC },
          { type: pkcs11js.CKA_EC_PARAMS, value: ec.der },
        ]
      : [
          { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
          { type: pkcs11js.CKA_MODULUS_BITS, value: RSA_BITS[keyType] ?? 2048 },
          { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: F4 },
        ]),
  ];
  const privateKey = [
    ...common,
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: keyType === "ed25519" ? CKK_EC_EDWARDS : ec ? pkcs11js.CKK_EC : pkcs11js.CKK_RSA },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ];
  const mechanism = { mechanism: keyGenMechanism(keyType) };
  return { mechanism, publicKey, privateKey };
}

/** The PKCS#11 key-pair generation mechanism of a key type. */
export function keyGenMechanism(keyType: KeyType): number {
  if (keyType === "ed25519") return CKM_EC_EDWARDS_KEY_PAIR_GEN;
  return isEcKeyType(keyType) ? pkcs11js.CKM_EC_KEY_PAIR_GEN : pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN;
}

/** The modulus size of an RSA key type; undefined for EC. */
export function rsaModulusBits(keyType: KeyType): number | undefined {
  return RSA_BITS[keyType];
}

/** Reads the public key object back into a node KeyObject, and tells which key type it is. */
export function readPublicKey(pkcs11: Pkcs11, session: Handle, handle: Handle): { keyType: KeyType; publicKey: KeyObject } {
  const [kt] = pkcs11.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_KEY_TYPE }]);
  const keyTypeValue = kt?.value ? ulong(kt.value) : undefined;
  if (keyTypeValue === CKK_EC_EDWARDS) {
    const [params, point] = pkcs11.C_GetAttributeValue(session, handle, [
      { type: pkcs11js.CKA_EC_PARAMS },
      { type: pkcs11js.CKA_EC_POINT },
    ]);
    if (!params?.value || !(params.value.equals(ED25519_PARAMS) || params.value.equals(ED25519_OID)) || !point?.value) {
      throw new HallmarkError("hsm_key_type_unsupported", "unsupported Edwards-curve key in the HSM");
    }
    const raw = unwrapOctetString(point.value, ED25519_PUBLIC_KEY_SIZE);
    const jwk = { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") };
    return { keyType: "ed25519", publicKey: createPublicKey({ key: jwk, format: "jwk" }) };
  }
  if (keyTypeValue === pkcs11js.CKK_EC) {
    const [params, point] = pkcs11.C_GetAttributeValue(session, handle, [
      { type: pkcs11js.CKA_EC_PARAMS },
      { type: pkcs11js.CKA_EC_POINT },
    ]);
    const entry = Object.entries(EC_PARAMS).find(([, p]) => params?.value && p.der.equals(params.value));
    if (!entry || !point?.value) throw new HallmarkError("hsm_key_type_unsupported", "unsupported EC key in the HSM");
    const [keyType, curve] = entry;
    const raw = unwrapOctetString(point.value, curve.size * 2 + 1);
    if (raw[0] !== 0x04) throw new HallmarkError("hsm_error", "the HSM returned a compressed EC point");
    const jwk = {
      kty: "EC",
      crv: curve.crv,
      x: raw.subarray(1, 1 + curve.size).toString("base64url"),
      y: raw.subarray(1 + curve.size).toString("base64url"),
    };
    return { keyType: keyType as KeyType, publicKey: createPublicKey({ key: jwk, format: "jwk" }) };
  }
  if (keyTypeValue === pkcs11js.CKK_RSA) {
    const [n, e] = pkcs11.C_GetAttributeValue(session, handle, [
      { type: pkcs11js.CKA_MODULUS },
      { type: pkcs11js.CKA_PUBLIC_EXPONENT },
    ]);
    if (!n?.value || !e?.value) throw new HallmarkError("hsm_error", "the HSM returned an incomplete RSA key");
    const bits = n.value.length * 8;
    const keyType = bits === 2048 ? "rsa-2048" : bits === 3072 ? "rsa-3072" : undefined;
    if (!keyType) throw new HallmarkError("hsm_key_type_unsupported", `unsupported RSA key size ${bits} in the HSM`);
    const jwk = { kty: "RSA", n: n.value.toString("base64url"), e: e.value.toString("base64url") };
    return { keyType, publicKey: createPublicKey({ key: jwk, format: "jwk" }) };
  }
  throw new HallmarkError("hsm_key_type_unsupported", "unsupported key type in the HSM");
}

/** CKA_EC_POINT is a DER OCTET STRING around the point (some modules return the bare point). */
function unwrapOctetString(value: Buffer, pointLength: number): Buffer {
  if (value.length === pointLength) return value;
  if (value[0] === 0x04 && value[1] === pointLength && value.length === pointLength + 2) return value.subarray(2);
  if (value[0] === 0x04 && value[1] === 0x81 && value[2] === pointLength && value.length === pointLength + 3) return value.subarray(3);
  throw new HallmarkError("hsm_error", "the HSM returned a malformed EC point");
}

/** A CK_ULONG as the module returns it (8 bytes on 64-bit platforms). */
function ulong(value: Buffer): number {
  return value.length === 8 ? Number(value.readBigUInt64LE()) : value.readUIntLE(0, Math.min(value.length, 6));
}
