/**
 * A minimal DER encoder for the certificates Hallmark signs. Building the TBSCertificate
 * ourselves keeps every byte we sign under our control and lets the HSM signer plug in
 * directly; parsing (CSRs, conformance checks) uses independent libraries.
 */
export type Der = Buffer;

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, content: Uint8Array): Der {
  return Buffer.concat([Buffer.from([tag]), length(content.length), content]);
}

export const sequence = (...items: Der[]): Der => tlv(0x30, Buffer.concat(items));
export const set = (...items: Der[]): Der => tlv(0x31, Buffer.concat(items));
export const octetString = (b: Uint8Array): Der => tlv(0x04, b);
export const bitString = (b: Uint8Array, unusedBits = 0): Der => tlv(0x03, Buffer.concat([Buffer.from([unusedBits]), b]));
export const boolean = (v: boolean): Der => tlv(0x01, Buffer.from([v ? 0xff : 0x00]));
export const utf8String = (s: string): Der => tlv(0x0c, Buffer.from(s, "utf8"));
export const nullValue = (): Der => Buffer.from([0x05, 0x00]);
/** [n] EXPLICIT */
export const explicit = (n: number, inner: Der): Der => tlv(0xa0 | n, inner);
/** [n] IMPLICIT primitive (e.g. GeneralName uniformResourceIdentifier [6], dNSName [2], keyIdentifier [0]). */
export const implicitPrimitive = (n: number, content: Uint8Array): Der => tlv(0x80 | n, content);

/** A non-negative INTEGER from big-endian magnitude bytes (a leading 0x00 is added when needed). */
export function unsignedInteger(magnitude: Uint8Array): Der {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  let body = Buffer.from(magnitude.subarray(start));
  if ((body[0] ?? 0) & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return tlv(0x02, body);
}

export function smallInteger(n: number): Der {
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  return unsignedInteger(Buffer.from(bytes));
}

export function oid(dotted: string): Der {
  const parts = dotted.split(".").map(Number);
  const [a = 0, b = 0, ...rest] = parts;
  const bytes: number[] = [40 * a + b];
  for (const p of rest) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. Seconds precision, Zulu. */
export function time(d: Date): Der {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, "");
  const year = d.getUTCFullYear();
  if (year >= 1950 && year < 2050) return tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, "ascii"));
  return tlv(0x18, Buffer.from(`${digits}Z`, "ascii"));
}

/** A Name of RDNs, each one attribute (OID, UTF8String value). */
export function name(attributes: ReadonlyArray<[string, string]>): Der {
  return sequence(...attributes.map(([type, value]) => set(sequence(oid(type), utf8String(value)))));
}

export const OID = {
  organization: "2.5.4.10",
  commonName: "2.5.4.3",
  countryName: "2.5.4.6",
  serialNumber: "2.5.4.5",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  ecdsaWithSha384: "1.2.840.10045.4.3.3",
  sha256WithRsa: "1.2.840.113549.1.1.11",
  sha384WithRsa: "1.2.840.113549.1.1.12",
  rsassaPss: "1.2.840.113549.1.1.10",
  sha256: "2.16.840.1.101.3.4.2.1",
  sha384: "2.16.840.1.101.3.4.2.2",
  mgf1: "1.2.840.113549.1.1.8",
} as const;

export interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  headerStart: number;
  /** Offset of the content. */
  start: number;
  /** Offset just past the content. */
  end: number;
}

/** Reads one DER TLV at `at`, checking its length against the buffer; undefined when malformed. */
export function readTlv(b: Uint8Array, at: number): Tlv | undefined {
  if (at + 2 > b.length) return undefined;
  const tag = b[at] ?? 0;
  const first = b[at + 1] ?? 0;
  let start = at + 2;
  let len = first;
  if (first >= 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > 4 || start + n > b.length) return undefined;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (b[start + i] ?? 0);
    start += n;
  }
  const end = start + len;
  return end > b.length ? undefined : { tag, headerStart: at, start, end };
}
