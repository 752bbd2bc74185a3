/**
 * The few DER pieces that the ASN.1 schema library does not give us byte-exact control over:
 * the outer Certificate SEQUENCE (so the signed TBS bytes are embedded untouched), ECDSA
 * signature values, RSASSA-PSS parameters, and a bounds-checked TLV reader for untrusted input.
 */
import { HallmarkError } from "../errors.js";

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

export const sequence = (...items: Uint8Array[]): Der => tlv(0x30, Buffer.concat(items));
export const bitString = (b: Uint8Array): Der => tlv(0x03, Buffer.concat([Buffer.from([0]), b]));
export const nullValue = (): Der => Buffer.from([0x05, 0x00]);
/** [n] EXPLICIT */
export const explicit = (n: number, inner: Der): Der => tlv(0xa0 | n, inner);

/** Big-endian magnitude bytes → the content octets of a positive, minimally encoded INTEGER. */
export function positiveIntegerBytes(magnitude: Uint8Array): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const body = Buffer.from(magnitude.subarray(start));
  return (body[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), body]) : body;
}

export const unsignedInteger = (magnitude: Uint8Array): Der => tlv(0x02, positiveIntegerBytes(magnitude));
export function smallInteger(n: number): Der {
  const bytes: number[] = [];
  for (let v = n; bytes.length === 0 || v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return unsignedInteger(Buffer.from(bytes));
}

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, Zulu. */
export function time(d: Date): Der {
  const year = d.getUTCFullYear();
  if (!(year >= 1950 && year <= 9999)) throw new HallmarkError("ttl_invalid", "a certificate time must fall in the years 1950 to 9999");
  const digits = d.toISOString().slice(0, 19).replace(/[-T:]/g, "");
  return year < 2050 ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, "ascii")) : tlv(0x18, Buffer.from(`${digits}Z`, "ascii"));
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

export interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  headerStart: number;
  /** Offset of the content. */
  start: number;
  /** Offset just past the content. */
  end: number;
}

/**
 * Reads one DER TLV at `at`, checking its length against the buffer; undefined when malformed.
 * Only single-byte tags and definite lengths: DER has nothing else in the structures we read.
 */
export function readTlv(b: Uint8Array, at: number): Tlv | undefined {
  if (at + 2 > b.length) return undefined;
  const tag = b[at] ?? 0;
  if ((tag & 0x1f) === 0x1f) return undefined;
  const first = b[at + 1] ?? 0;
  let start = at + 2;
  let len = first;
  if (first >= 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > 4 || start + n > b.length) return undefined;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (b[start + i] ?? 0);
    // DER: the long form only when needed, without leading zero octets.
    if (len < 0x80 || b[start] === 0) return undefined;
    start += n;
  }
  const end = start + len;
  return end > b.length ? undefined : { tag, headerStart: at, start, end };
}
