import { CborMap, CborTagged, type CborValue } from "./decode.js";

/** A canonical CBOR encoder (definite lengths, shortest arguments): COSE Sig_structure and test documents. */
export function encodeCbor(v: CborValue): Buffer {
  const out: Buffer[] = [];
  write(v, out);
  return Buffer.concat(out);
}

function head(major: number, n: number | bigint): Buffer {
  const m = major << 5;
  if (typeof n === "bigint" || n > 0xffffffff) {
    const b = Buffer.alloc(9);
    b[0] = m | 27;
    b.writeBigUInt64BE(BigInt(n), 1);
    return b;
  }
  if (n < 24) return Buffer.from([m | n]);
  if (n < 0x100) return Buffer.from([m | 24, n]);
  if (n < 0x10000) return Buffer.from([m | 25, n >> 8, n & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = m | 26;
  b.writeUInt32BE(n, 1);
  return b;
}

function write(v: CborValue, out: Buffer[]): void {
  if (v === false) out.push(Buffer.from([0xf4]));
  else if (v === true) out.push(Buffer.from([0xf5]));
  else if (v === null) out.push(Buffer.from([0xf6]));
  else if (v === undefined) out.push(Buffer.from([0xf7]));
  else if (typeof v === "number" || typeof v === "bigint") {
    if (typeof v === "number" && !Number.isInteger(v)) {
      const b = Buffer.alloc(9);
      b[0] = 0xfb;
      b.writeDoubleBE(v, 1);
      out.push(b);
    } else if (v >= 0) out.push(head(0, v));
    else out.push(head(1, typeof v === "bigint" ? -1n - v : -1 - v));
  } else if (typeof v === "string") {
    const b = Buffer.from(v, "utf8");
    out.push(head(3, b.length), b);
  } else if (v instanceof Uint8Array) out.push(head(2, v.length), Buffer.from(v));
  else if (Array.isArray(v)) {
    out.push(head(4, v.length));
    for (const x of v) write(x, out);
  } else if (v instanceof CborMap) {
    out.push(head(5, v.size));
    for (const [k, x] of v) {
      write(k, out);
      write(x, out);
    }
  } else if (v instanceof CborTagged) {
    out.push(head(6, v.tag));
    write(v.value, out);
  }
}
