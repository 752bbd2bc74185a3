import { type Tlv, readTlv } from "./der.js";

/**
 * A small, allocation-light DER reader for the certificate and CSR structures we check on every
 * issuance: walking TLVs is some twenty times faster than a schema parse, and it shares nothing
 * with the certificate builder. Every function returns undefined on malformed input, never throws.
 */
export const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  oid: 0x06,
  sequence: 0x30,
  set: 0x31,
  utcTime: 0x17,
  generalizedTime: 0x18,
} as const;

/** The TLVs inside a constructed TLV, which must be filled exactly. */
export function children(b: Uint8Array, parent: Tlv): Tlv[] | undefined {
  const out: Tlv[] = [];
  for (let at = parent.start; at < parent.end; ) {
    const t = readTlv(b, at);
    if (!t || t.end > parent.end) return undefined;
    out.push(t);
    at = t.end;
  }
  return out;
}

/** The single TLV filling all of `b`. */
export function whole(b: Uint8Array, tag: number): Tlv | undefined {
  const t = readTlv(b, 0);
  return t && t.tag === tag && t.end === b.length ? t : undefined;
}

export function oidString(b: Uint8Array, t: Tlv): string | undefined {
  if (t.tag !== TAG.oid || t.end === t.start) return undefined;
  const parts: number[] = [];
  let v = 0;
  for (let i = t.start; i < t.end; i++) {
    const byte = b[i] ?? 0;
    if (v === 0 && byte === 0x80) return undefined; // non-minimal
    v = v * 128 + (byte & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 128) return undefined;
    if (!(byte & 0x80)) {
      if (parts.length === 0) parts.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else parts.push(v);
      v = 0;
    } else if (i === t.end - 1) return undefined; // truncated arc
  }
  return parts.join(".");
}

export interface RawExtension {
  critical: boolean;
  /** The extnValue contents (the DER of the extension's own structure). */
  value: Uint8Array;
}

/**
 * Extensions ::= SEQUENCE OF SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }.
 * Returns "duplicate" when an extension appears twice (RFC 5280 §4.2 forbids it).
 */
export function readExtensions(b: Uint8Array, seq: Tlv): Map<string, RawExtension> | "duplicate" | undefined {
  if (seq.tag !== TAG.sequence) return undefined;
  const items = children(b, seq);
  if (!items) return undefined;
  const out = new Map<string, RawExtension>();
  for (const item of items) {
    const parts = item.tag === TAG.sequence ? children(b, item) : undefined;
    if (!parts || parts.length < 2 || parts.length > 3) return undefined;
    const [idTlv, second, third] = parts;
    const id = idTlv && oidString(b, idTlv);
    const valueTlv = parts.length === 3 ? third : second;
    let critical = false;
    if (parts.length === 3) {
      if (second?.tag !== TAG.boolean || second.end - second.start !== 1) return undefined;
      critical = b[second.start] !== 0;
    }
    if (!id || !valueTlv || valueTlv.tag !== TAG.octetString) return undefined;
    if (out.has(id)) return "duplicate";
    out.set(id, { critical, value: b.subarray(valueTlv.start, valueTlv.end) });
  }
  return out;
}

/** KeyUsage BIT STRING → bit n of the result is named bit n (0 = digitalSignature … 8 = decipherOnly). */
export function decodeKeyUsage(v: Uint8Array): number | undefined {
  const t = whole(v, TAG.bitString);
  if (!t || t.end - t.start < 1) return undefined;
  const unused = v[t.start] ?? 0;
  if (unused > 7) return undefined;
  let bits = 0;
  for (let i = t.start + 1; i < t.end && i < t.start + 3; i++) {
    const byte = v[i] ?? 0;
    for (let j = 0; j < 8; j++) if (byte & (0x80 >> j)) bits |= 1 << ((i - t.start - 1) * 8 + j);
  }
  return bits;
}

export const KEY_USAGE_BIT = { digitalSignature: 1 << 0, keyEncipherment: 1 << 2, keyAgreement: 1 << 4, keyCertSign: 1 << 5, cRLSign: 1 << 6 } as const;

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL } */
export function decodeBasicConstraints(v: Uint8Array): { cA: boolean } | undefined {
  const t = whole(v, TAG.sequence);
  const parts = t && children(v, t);
  if (!parts || parts.length > 2) return undefined;
  const first = parts[0];
  if (first?.tag === TAG.boolean) {
    if (first.end - first.start !== 1) return undefined;
    return { cA: v[first.start] !== 0 };
  }
  return first === undefined || first.tag === TAG.integer ? { cA: false } : undefined;
}

/** ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId */
export function decodeExtKeyUsage(v: Uint8Array): string[] | undefined {
  const t = whole(v, TAG.sequence);
  const parts = t && children(v, t);
  if (!parts || parts.length === 0) return undefined;
  const oids = parts.map((p) => oidString(v, p));
  return oids.every((o): o is string => o !== undefined) ? oids : undefined;
}

/** GeneralNames: the uniformResourceIdentifier [6] and dNSName [2] entries (IA5String contents). */
export function decodeGeneralNames(v: Uint8Array): { uris: string[]; dnsNames: string[]; other: number } | undefined {
  const t = whole(v, TAG.sequence);
  const parts = t && children(v, t);
  if (!parts || parts.length === 0) return undefined;
  const out = { uris: [] as string[], dnsNames: [] as string[], other: 0 };
  for (const p of parts) {
    const text = Buffer.from(v.subarray(p.start, p.end)).toString("latin1");
    if (p.tag === 0x86) out.uris.push(text);
    else if (p.tag === 0x82) out.dnsNames.push(text);
    else out.other++;
  }
  return out;
}

/** DER elements laid end to end in `b` (a certificate chain in one buffer, as the Workload API sends it), each of tag `tag`. */
export function concatenatedElements(b: Uint8Array, tag: number): Buffer[] | undefined {
  const out: Buffer[] = [];
  for (let at = 0; at < b.length; ) {
    const t = readTlv(b, at);
    if (!t || t.tag !== tag) return undefined;
    out.push(Buffer.from(b.subarray(at, t.end)));
    at = t.end;
  }
  return out;
}
