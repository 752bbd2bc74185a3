import { createHash, createHmac } from "node:crypto";

/** KDFa (TPM 2.0 Part 1 §11.4.10.2): SP 800-108 counter mode with HMAC; `label` without its NUL. */
export function kdfa(hash: string, key: Buffer, label: string, contextU: Buffer, contextV: Buffer, bits: number): Buffer {
  const out: Buffer[] = [];
  const bitsBuf = u32(bits);
  for (let i = 1, len = 0; len < bits / 8; i++) {
    const block = createHmac(hash, key).update(u32(i)).update(label, "ascii").update(Buffer.from([0])).update(contextU).update(contextV).update(bitsBuf).digest();
    out.push(block);
    len += block.length;
  }
  return truncateBits(Buffer.concat(out), bits);
}

/** KDFe (TPM 2.0 Part 1 §11.4.10.3): SP 800-56A concatenation KDF over the shared secret Z. */
export function kdfe(hash: string, z: Buffer, label: string, partyU: Buffer, partyV: Buffer, bits: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 1, len = 0; len < bits / 8; i++) {
    const block = createHash(hash).update(u32(i)).update(z).update(label, "ascii").update(Buffer.from([0])).update(partyU).update(partyV).digest();
    out.push(block);
    len += block.length;
  }
  return truncateBits(Buffer.concat(out), bits);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function truncateBits(b: Buffer, bits: number): Buffer {
  const bytes = Math.ceil(bits / 8);
  const out = Buffer.from(b.subarray(0, bytes));
  if (bits % 8 !== 0) out[0] = (out[0] ?? 0) & (0xff >> (8 - (bits % 8)));
  return out;
}
