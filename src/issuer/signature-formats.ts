import { AlgorithmIdentifier } from "@peculiar/asn1-x509";
import type { KeyType, SignatureScheme } from "../hsm/signer.js";
import { type Der, explicit, nullValue, oid, readTlv, sequence, smallInteger, unsignedInteger } from "./der.js";

const OID = {
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  ecdsaWithSha384: "1.2.840.10045.4.3.3",
  sha256WithRsa: "1.2.840.113549.1.1.11",
  sha384WithRsa: "1.2.840.113549.1.1.12",
  rsassaPss: "1.2.840.113549.1.1.10",
  mgf1: "1.2.840.113549.1.1.8",
  sha256: "2.16.840.1.101.3.4.2.1",
  sha384: "2.16.840.1.101.3.4.2.2",
} as const;

export type JwsAlg = "ES256" | "ES384" | "RS256" | "RS384" | "PS256" | "PS384";

/**
 * Everything about one signature scheme in one table: its JWS `alg`, its X.509
 * AlgorithmIdentifier, and whether the signer's raw output needs wrapping for X.509
 * (ECDSA r||s → DER ECDSA-Sig-Value; RSA signatures are used as they are).
 */
interface SchemeInfo {
  jwsAlg: JwsAlg;
  ecdsa: boolean;
  algorithm: string;
  /** DER of the AlgorithmIdentifier parameters; undefined = absent (RFC 5758 §3.2 for ECDSA). */
  parameters: Der | null | undefined;
}

/**
 * RFC 4055 §3.1 RSASSA-PSS-params, every field explicit: hash, MGF1 with the same hash, the
 * salt length of the hash's size. Explicit rather than defaulted, since the defaults are SHA-1.
 */
function pssParameters(hashOid: string, saltLength: number): Der {
  const hash = sequence(oid(hashOid), nullValue());
  return sequence(explicit(0, hash), explicit(1, sequence(oid(OID.mgf1), hash)), explicit(2, smallInteger(saltLength)));
}

export const SCHEMES: Readonly<Record<SignatureScheme, SchemeInfo>> = {
  "ecdsa-sha256": { jwsAlg: "ES256", ecdsa: true, algorithm: OID.ecdsaWithSha256, parameters: undefined },
  "ecdsa-sha384": { jwsAlg: "ES384", ecdsa: true, algorithm: OID.ecdsaWithSha384, parameters: undefined },
  // RFC 4055 §5: the parameters of the PKCS#1 v1.5 algorithms MUST be NULL.
  "rsa-pkcs1-sha256": { jwsAlg: "RS256", ecdsa: false, algorithm: OID.sha256WithRsa, parameters: null },
  "rsa-pkcs1-sha384": { jwsAlg: "RS384", ecdsa: false, algorithm: OID.sha384WithRsa, parameters: null },
  "rsa-pss-sha256": { jwsAlg: "PS256", ecdsa: false, algorithm: OID.rsassaPss, parameters: pssParameters(OID.sha256, 32) },
  "rsa-pss-sha384": { jwsAlg: "PS384", ecdsa: false, algorithm: OID.rsassaPss, parameters: pssParameters(OID.sha384, 48) },
};

/** The X.509 signatureAlgorithm of a scheme, as the ASN.1 schema object. */
export function x509Algorithm(scheme: SignatureScheme): AlgorithmIdentifier {
  const { algorithm, parameters } = SCHEMES[scheme];
  if (parameters === undefined) return new AlgorithmIdentifier({ algorithm });
  if (parameters === null) return new AlgorithmIdentifier({ algorithm, parameters: null });
  return new AlgorithmIdentifier({ algorithm, parameters: toArrayBuffer(parameters) });
}

/** The scheme of a JWS `alg`; undefined for anything we do not sign or accept (including "none"). */
export function schemeForJwsAlg(alg: string): SignatureScheme | undefined {
  return (Object.keys(SCHEMES) as SignatureScheme[]).find((s) => SCHEMES[s].jwsAlg === alg);
}

/** The scheme a CA key of this type signs certificates with (PKCS#1 v1.5 for RSA: the most widely verifiable). */
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

/** IEEE P1363 r||s (what PKCS#11 returns and JWS uses) → DER ECDSA-Sig-Value (what X.509 uses). Undefined when not two equal halves. */
export function rawEcdsaToDer(raw: Uint8Array): Buffer | undefined {
  if (raw.length === 0 || raw.length % 2 !== 0) return undefined;
  const half = raw.length / 2;
  return sequence(unsignedInteger(raw.subarray(0, half)), unsignedInteger(raw.subarray(half)));
}

/**
 * DER ECDSA-Sig-Value → r||s with each half `fieldBytes` long. Strict DER (minimal, positive
 * INTEGERs, nothing trailing); undefined for anything else, so callers choose their refusal.
 */
export function derEcdsaToRaw(der: Uint8Array, fieldBytes: number): Buffer | undefined {
  const outer = readTlv(der, 0);
  if (!outer || outer.tag !== 0x30 || outer.end !== der.length) return undefined;
  const r = readTlv(der, outer.start);
  const s = r && readTlv(der, r.end);
  if (!r || !s || s.end !== outer.end) return undefined;
  const out = Buffer.alloc(2 * fieldBytes);
  for (const [i, n] of [r, s].entries()) {
    if (n.tag !== 0x02 || n.end === n.start) return undefined;
    let body = der.subarray(n.start, n.end);
    if ((body[0] ?? 0) & 0x80) return undefined; // negative
    if (body.length > 1 && body[0] === 0) {
      if (!((body[1] ?? 0) & 0x80)) return undefined; // not minimal
      body = body.subarray(1);
    }
    if (body.length > fieldBytes) return undefined;
    out.set(body, (i + 1) * fieldBytes - body.length);
  }
  return out;
}

/** The signatureValue bytes for X.509 from what a Signer returned. */
export function x509SignatureValue(scheme: SignatureScheme, raw: Uint8Array): Buffer | undefined {
  return SCHEMES[scheme].ecdsa ? rawEcdsaToDer(raw) : Buffer.from(raw);
}

function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}
