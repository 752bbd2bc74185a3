import { type KeyObject, createPublicKey } from "node:crypto";
import type { Tlv } from "./der.js";
import { TAG, children, oidString, whole } from "./der-reader.js";

/**
 * SubjectPublicKeyInfo, read by walking its DER. OpenSSL's DER key decoder costs about 100 µs a
 * call (measured, OpenSSL 3.0, P-256); this walk costs microseconds, and a KeyObject built from
 * the JWK coordinates about half the decoder's time (the point is still checked to be on the curve).
 */
export type SpkiInfo =
  | { kind: "ec"; curve: "P-256" | "P-384"; x: Buffer; y: Buffer }
  | { kind: "rsa"; modulusBits: number; n: Buffer; e: Buffer }
  | { kind: "unsupported"; algorithm: string };

const ALG = { ec: "1.2.840.10045.2.1", rsa: "1.2.840.113549.1.1.1" } as const;
const CURVES: Record<string, { name: "P-256" | "P-384"; size: number }> = {
  "1.2.840.10045.3.1.7": { name: "P-256", size: 32 },
  "1.3.132.0.34": { name: "P-384", size: 48 },
};

/** Undefined when the bytes are not a well-formed SubjectPublicKeyInfo of EC (named curve) or RSA. */
export function readSpki(spki: Uint8Array): SpkiInfo | undefined {
  const outer = whole(spki, TAG.sequence);
  const [algorithm, bits, ...rest] = (outer && children(spki, outer)) ?? [];
  if (algorithm?.tag !== TAG.sequence || bits?.tag !== TAG.bitString || rest.length || bits.end - bits.start < 2 || spki[bits.start] !== 0) return undefined;
  const [algOid, params, ...more] = children(spki, algorithm) ?? [];
  const alg = algOid && oidString(spki, algOid);
  if (!alg || more.length) return undefined;
  const key = spki.subarray(bits.start + 1, bits.end);
  if (alg === ALG.ec) {
    const curve = params && CURVES[oidString(spki, params) ?? ""];
    if (!params) return undefined;
    if (!curve) return { kind: "unsupported", algorithm: `ec ${oidString(spki, params) ?? "explicit parameters"}` };
    // Uncompressed points only (RFC 5480 §2.2: compressed MAY be refused).
    if (key.length !== 1 + 2 * curve.size || key[0] !== 0x04) return undefined;
    return { kind: "ec", curve: curve.name, x: Buffer.from(key.subarray(1, 1 + curve.size)), y: Buffer.from(key.subarray(1 + curve.size)) };
  }
  if (alg === ALG.rsa) {
    if (params && !(params.tag === 0x05 && params.end === params.start)) return undefined;
    return readRsaPublicKey(key);
  }
  return { kind: "unsupported", algorithm: alg };
}

/** RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }, both positive and minimal. */
function readRsaPublicKey(key: Uint8Array): SpkiInfo | undefined {
  const seq = whole(key, TAG.sequence);
  const [n, e, ...rest] = (seq && children(key, seq)) ?? [];
  const modulus = n && positive(key, n);
  const exponent = e && positive(key, e);
  if (!modulus || !exponent || rest.length) return undefined;
  const top = modulus[0] ?? 0;
  return { kind: "rsa", modulusBits: (modulus.length - 1) * 8 + (32 - Math.clz32(top)), n: modulus, e: exponent };
}

function positive(b: Uint8Array, t: Tlv): Buffer | undefined {
  if (t.tag !== TAG.integer || t.end === t.start) return undefined;
  let v = b.subarray(t.start, t.end);
  if ((v[0] ?? 0) & 0x80) return undefined;
  if (v[0] === 0) {
    if (v.length === 1 || !((v[1] ?? 0) & 0x80)) return undefined;
    v = v.subarray(1);
  }
  return Buffer.from(v);
}

/** A KeyObject for an EC or RSA key read by readSpki; throws (a node error) if the key is invalid, e.g. a point off the curve. */
export function publicKeyOf(info: Extract<SpkiInfo, { kind: "ec" | "rsa" }>): KeyObject {
  const jwk =
    info.kind === "ec"
      ? { kty: "EC", crv: info.curve, x: info.x.toString("base64url"), y: info.y.toString("base64url") }
      : { kty: "RSA", n: info.n.toString("base64url"), e: info.e.toString("base64url") };
  return createPublicKey({ key: jwk, format: "jwk" });
}

export type AcceptedKey = Extract<SpkiInfo, { kind: "ec" | "rsa" }>;

/** The keys Hallmark certifies: EC P-256 and P-384, RSA of 2048 to 4096 bits. */
export function isAcceptedKey(info: SpkiInfo | undefined): info is AcceptedKey {
  if (!info || info.kind === "unsupported") return false;
  return info.kind === "ec" || (info.modulusBits >= 2048 && info.modulusBits <= 4096);
}

export const ACCEPTED_KEYS = "EC P-256, EC P-384 and RSA 2048-4096";
