import { tpmError } from "./errors.js";

/**
 * Big-endian TPM 2.0 marshalling. Every read is checked against the buffer (tpm_truncated), a
 * TPM2B's size must fit what remains, and `end()` refuses trailing bytes: hostile evidence only
 * ever produces a typed refusal.
 */
export class TpmReader {
  private pos = 0;
  constructor(private readonly b: Buffer) {}

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.b.length - this.pos;
  }

  private need(n: number): void {
    if (n > this.remaining) throw tpmError("tpm_truncated", `a TPM structure is truncated (needs ${n} bytes, ${this.remaining} left)`);
  }

  u8(): number {
    this.need(1);
    return this.b.readUInt8(this.pos++);
  }

  u16(): number {
    this.need(2);
    const v = this.b.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    this.need(4);
    const v = this.b.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): bigint {
    this.need(8);
    const v = this.b.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  bytes(n: number): Buffer {
    this.need(n);
    const v = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** TPM2B: a u16 size, then that many bytes. */
  tpm2b(): Buffer {
    return this.bytes(this.u16());
  }

  slice(start: number, end: number): Buffer {
    return this.b.subarray(start, end);
  }

  end(): void {
    if (this.remaining !== 0) throw tpmError("tpm_trailing_bytes", `${this.remaining} trailing bytes after a TPM structure`);
  }
}

export class TpmWriter {
  private readonly parts: Buffer[] = [];

  u8(v: number): this {
    this.parts.push(Buffer.from([v & 0xff]));
    return this;
  }

  u16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    this.parts.push(b);
    return this;
  }

  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    this.parts.push(b);
    return this;
  }

  u64(v: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(v);
    this.parts.push(b);
    return this;
  }

  bytes(b: Uint8Array): this {
    this.parts.push(Buffer.from(b));
    return this;
  }

  tpm2b(b: Uint8Array): this {
    if (b.length > 0xffff) throw tpmError("tpm_size_mismatch", "a TPM2B cannot hold more than 65535 bytes");
    return this.u16(b.length).bytes(b);
  }

  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}
