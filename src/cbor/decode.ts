import { HallmarkError } from "../errors.js";

/**
 * A strict CBOR decoder (RFC 8949) for attestation documents: every length is checked against
 * the input before anything is allocated, maps with duplicate keys are refused, nesting is
 * bounded, trailing bytes are refused. Indefinite-length strings, arrays and maps are accepted
 * (the RFC allows them; some producers use them). Unknown map keys are the caller's business.
 */
export type CborValue =
  | number
  | bigint
  | string
  | boolean
  | null
  | undefined
  | Uint8Array
  | CborValue[]
  | CborMap
  | CborTagged;

export class CborMap extends Map<CborValue, CborValue> {}

export class CborTagged {
  constructor(
    readonly tag: number | bigint,
    readonly value: CborValue,
  ) {}
}

export interface DecodedItem {
  value: CborValue;
  /** The exact bytes of this item, for signatures over what was received. */
  raw: Uint8Array;
}

const MAX_DEPTH = 32;

export class CborError extends HallmarkError {
  constructor(message: string) {
    super("cbor_malformed", `CBOR: ${message}`);
  }
}

/** Decodes exactly one item filling the whole input. */
export function decodeCbor(input: Uint8Array): CborValue {
  const r = new Reader(input);
  const value = r.item(0);
  if (r.pos !== input.length) throw new CborError(`${input.length - r.pos} trailing bytes`);
  return value;
}

class Reader {
  pos = 0;
  constructor(private readonly b: Uint8Array) {}

  private byte(): number {
    if (this.pos >= this.b.length) throw new CborError("truncated");
    return this.b[this.pos++]!;
  }

  private take(n: number): Uint8Array {
    if (n > this.b.length - this.pos) throw new CborError("a length runs past the end of the input");
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** The argument of an initial byte: a number, or a bigint past 2^53, or -1 for indefinite. */
  private argument(info: number): number | bigint {
    if (info < 24) return info;
    if (info === 24) return this.byte();
    if (info === 25) return (this.byte() << 8) | this.byte();
    if (info === 26) return ((this.byte() << 24) >>> 0) + (this.byte() << 16) + (this.byte() << 8) + this.byte();
    if (info === 27) {
      const v = Buffer.from(this.take(8)).readBigUInt64BE();
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    if (info === 31) return -1;
    throw new CborError(`reserved additional information ${info}`);
  }

  private length(info: number): number {
    const n = this.argument(info);
    if (typeof n === "bigint") throw new CborError("a length is too large");
    return n;
  }

  item(depth: number): CborValue {
    if (depth > MAX_DEPTH) throw new CborError("nested too deeply");
    const initial = this.byte();
    const major = initial >> 5;
    const info = initial & 0x1f;
    switch (major) {
      case 0: {
        if (info === 31) throw new CborError("indefinite length on an integer");
        return this.argument(info);
      }
      case 1: {
        if (info === 31) throw new CborError("indefinite length on an integer");
        const n = this.argument(info);
        return typeof n === "bigint" ? -1n - n : -1 - n;
      }
      case 2:
      case 3: {
        const bytes = info === 31 ? this.chunks(major) : this.take(this.length(info));
        if (major === 2) return bytes;
        try {
          return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
        } catch {
          throw new CborError("a text string is not valid UTF-8");
        }
      }
      case 4: {
        const out: CborValue[] = [];
        if (info === 31) {
          while (!this.breakNext()) out.push(this.item(depth + 1));
        } else {
          const n = this.length(info);
          // Each element takes at least one byte: a count past the input is a lie.
          if (n > this.b.length - this.pos) throw new CborError("an array is longer than the input");
          for (let i = 0; i < n; i++) out.push(this.item(depth + 1));
        }
        return out;
      }
      case 5: {
        const m = new CborMap();
        const put = () => {
          const k = this.item(depth + 1);
          if (k instanceof Uint8Array || Array.isArray(k) || k instanceof CborMap || k instanceof CborTagged) {
            throw new CborError("only integer, text and simple map keys are accepted");
          }
          if (m.has(k)) throw new CborError(`duplicate map key ${String(k)}`);
          m.set(k, this.item(depth + 1));
        };
        if (info === 31) {
          while (!this.breakNext()) put();
        } else {
          const n = this.length(info);
          if (n * 2 > this.b.length - this.pos) throw new CborError("a map is longer than the input");
          for (let i = 0; i < n; i++) put();
        }
        return m;
      }
      case 6: {
        if (info === 31) throw new CborError("indefinite length on a tag");
        return new CborTagged(this.argument(info), this.item(depth + 1));
      }
      default:
        return this.simple(info);
    }
  }

  private simple(info: number): CborValue {
    switch (info) {
      case 20:
        return false;
      case 21:
        return true;
      case 22:
        return null;
      case 23:
        return undefined;
      case 25:
        return halfFloat((this.byte() << 8) | this.byte());
      case 26:
        return Buffer.from(this.take(4)).readFloatBE();
      case 27:
        return Buffer.from(this.take(8)).readDoubleBE();
      case 31:
        throw new CborError("unexpected break");
      default:
        if (info === 24) this.byte();
        throw new CborError(`unsupported simple value ${info}`);
    }
  }

  private breakNext(): boolean {
    if (this.pos >= this.b.length) throw new CborError("truncated indefinite-length item");
    if (this.b[this.pos] === 0xff) {
      this.pos++;
      return true;
    }
    return false;
  }

  /** Indefinite-length byte or text string: definite chunks of the same major type until break. */
  private chunks(major: number): Uint8Array {
    const parts: Uint8Array[] = [];
    while (!this.breakNext()) {
      const initial = this.byte();
      if (initial >> 5 !== major || (initial & 0x1f) === 31) throw new CborError("a string chunk has the wrong type");
      parts.push(this.take(this.length(initial & 0x1f)));
    }
    return Buffer.concat(parts);
  }
}

function halfFloat(h: number): number {
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * 2 ** -14 * (mant / 1024);
  if (exp === 31) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exp - 15) * (1 + mant / 1024);
}
