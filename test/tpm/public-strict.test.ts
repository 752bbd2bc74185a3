import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { TpmClient } from "../../src/tpm/client.js";
import { makeCredential } from "../../src/tpm/credential.js";
import { objectName } from "../../src/tpm/keys.js";
import { decodeTpm2bPublic } from "../../src/tpm/structures.js";
import { type Swtpm, startSwtpm } from "../helpers/swtpm.js";

/**
 * Strict TPM2B_PUBLIC parsing against public areas a real TPM (swtpm) produced: swtpm_setup's
 * RSA-2048 and ECC P-384 EKs, the TCG L-2 ECC P-256 EK, our own AK, and AKs made by tpm2-tools.
 * The allowed values below are written out from TPM 2.0 Part 2 (Table 31 for TPMA_OBJECT) and
 * Hallmark's documented choices, independently of the parser's tables.
 */

const RESERVED_ATTRIBUTE_BITS = [0, 3, 8, 9, 12, 13, 14, 15, ...Array.from({ length: 12 }, (_, i) => 20 + i)];
const HASHES = [0x0004, 0x000b, 0x000c, 0x000d];

interface Field {
  name: string;
  offset: number;
  size: 2 | 4;
  /** The values the parser must accept in this field (undefined: objectAttributes, checked bit by bit). */
  allowed?: number[];
  /** The code a value outside `allowed` must be refused with. */
  code: string;
}

/** Offsets (in the TPM2B_PUBLIC) of objectAttributes and of every algorithm identifier, from a parse of the original. */
function fieldsOf(tpm2b: Buffer): Field[] {
  const p = decodeTpm2bPublic(tpm2b);
  const out: Field[] = [
    { name: "type", offset: 2, size: 2, allowed: [0x0001, 0x0023], code: "tpm_unknown_tag" },
    { name: "nameAlg", offset: 4, size: 2, allowed: HASHES, code: "tpm_public_unknown_hash" },
    { name: "objectAttributes", offset: 6, size: 4, code: "tpm_public_reserved_bits" },
  ];
  let at = 12 + p.authPolicy.length;
  out.push({ name: "symmetric.algorithm", offset: at, size: 2, allowed: [0x0010, 0x0006], code: "tpm_public_unknown_symmetric" });
  at += 2;
  if (p.symmetric.algorithm !== 0x0010) {
    out.push({ name: "symmetric.keyBits", offset: at, size: 2, allowed: [128, 192, 256], code: "tpm_public_unknown_symmetric" });
    out.push({ name: "symmetric.mode", offset: at + 2, size: 2, allowed: [0x0043], code: "tpm_public_unknown_symmetric" });
    at += 4;
  }
  out.push({ name: "scheme", offset: at, size: 2, allowed: p.type === 0x0001 ? [0x0010, 0x0014, 0x0016] : [0x0010, 0x0018], code: "tpm_public_unknown_scheme" });
  at += 2;
  if (p.scheme.scheme !== 0x0010) {
    out.push({ name: "scheme.hashAlg", offset: at, size: 2, allowed: HASHES, code: "tpm_public_unknown_hash" });
    at += 2;
  }
  if (p.type === 0x0001) out.push({ name: "keyBits", offset: at, size: 2, allowed: [2048, 3072, 4096], code: "tpm_public_bad_rsa_parameters" });
  else {
    out.push({ name: "curveID", offset: at, size: 2, allowed: [0x0003, 0x0004, 0x0005], code: "tpm_public_unknown_curve" });
    out.push({ name: "kdf", offset: at + 2, size: 2, allowed: [0x0010], code: "tpm_public_unknown_scheme" });
  }
  return out;
}

function read(b: Buffer, f: Field): number {
  return f.size === 2 ? b.readUInt16BE(f.offset) : b.readUInt32BE(f.offset);
}

function withValue(b: Buffer, f: Field, v: number): Buffer {
  const c = Buffer.from(b);
  if (f.size === 2) c.writeUInt16BE(v, f.offset);
  else c.writeUInt32BE(v >>> 0, f.offset);
  return c;
}

/** The parse outcome: the Name (hex) of what parsed, or the refusal's code. */
function outcome(b: Buffer): { name: string } | { code: string } {
  try {
    return { name: objectName(decodeTpm2bPublic(b)).toString("hex") };
  } catch (e) {
    if ((e as { name?: string }).name !== "HallmarkError") throw e;
    return { code: (e as { code: string }).code };
  }
}

let tpm: Swtpm;
let client: TpmClient;
const EK_RSA = 0x81010001;
let ak: { handle: number; public: Buffer };
const publics: Record<string, Buffer> = {};

beforeAll(async () => {
  tpm = await startSwtpm();
  for (const [file, args] of [
    ["ak-ecc.pub", ["-G", "ecc", "-g", "sha256", "-s", "ecdsa"]],
    ["ak-rsassa.pub", ["-G", "rsa", "-g", "sha256", "-s", "rsassa"]],
    ["ak-rsapss.pub", ["-G", "rsa", "-g", "sha384", "-s", "rsapss"]],
  ] as const) {
    await tpm.tpm2("tpm2_createak", ["-C", `0x${EK_RSA.toString(16)}`, "-c", "ak.ctx", ...args, "-u", file]);
    publics[`tpm2-tools AK ${args.join(" ")}`] = readFileSync(join(tpm.dir, file));
  }
  await tpm.tpm2("tpm2_createek", ["-G", "ecc384", "-c", "ek.ctx", "-u", "ek-ecc384.pub"]);
  publics["tpm2-tools ECC P-384 EK (tpm2_createek -G ecc384)"] = readFileSync(join(tpm.dir, "ek-ecc384.pub"));
  client = await TpmClient.open(tpm.tcti);
  publics["swtpm_setup RSA-2048 EK"] = await client.readPublic(EK_RSA);
  publics["swtpm_setup ECC P-384 EK"] = await client.readPublic(0x81010016);
  const p256 = await client.createEk("ecc-p256");
  publics["TCG L-2 ECC P-256 EK"] = p256.public;
  await client.flush(p256.handle);
  await client.useEk(EK_RSA);
  ak = await client.createAk(EK_RSA);
  publics["Hallmark's AK"] = ak.public;
}, 60_000);

afterAll(async () => {
  await client?.close();
  await tpm?.stop();
});

describe("strict TPM2B_PUBLIC parsing of real public areas", () => {
  it("parses every EK and AK that swtpm, tpm2-tools and our own client produce", () => {
    expect(Object.keys(publics).length).toBe(8);
    for (const [what, b] of Object.entries(publics)) expect(outcome(b), what).toHaveProperty("name");
  });

  it("refuses each reserved objectAttributes bit with tpm_public_reserved_bits", () => {
    for (const [what, b] of Object.entries(publics)) {
      for (const bit of RESERVED_ATTRIBUTE_BITS) {
        const flipped = Buffer.from(b);
        flipped.writeUInt32BE((flipped.readUInt32BE(6) ^ (1 << bit)) >>> 0, 6);
        expect(outcome(flipped), `${what}, bit ${bit}`).toEqual({ code: "tpm_public_reserved_bits" });
      }
    }
  });

  it("refuses unknown hash, scheme, symmetric, curve and key-size identifiers with their own codes", () => {
    const cases: Array<[string, string, number, string]> = [
      ["Hallmark's AK", "nameAlg", 0x0012, "tpm_public_unknown_hash"], // SM3_256
      ["Hallmark's AK", "nameAlg", 0x0010, "tpm_public_unknown_hash"], // NULL: an object without a Name
      ["Hallmark's AK", "scheme", 0x001a, "tpm_public_unknown_scheme"], // ECDAA
      ["Hallmark's AK", "scheme", 0x0019, "tpm_public_unknown_scheme"], // ECDH, not a signing scheme
      ["Hallmark's AK", "scheme.hashAlg", 0x0010, "tpm_public_unknown_hash"],
      ["Hallmark's AK", "scheme.hashAlg", 0x0027, "tpm_public_unknown_hash"], // SHA3-256
      ["Hallmark's AK", "curveID", 0x0020, "tpm_public_unknown_curve"], // SM2 P-256
      ["Hallmark's AK", "kdf", 0x0020, "tpm_public_unknown_scheme"], // KDF1_SP800_56A
      ["tpm2-tools AK -G rsa -g sha256 -s rsassa", "scheme", 0x0017, "tpm_public_unknown_scheme"], // OAEP
      ["tpm2-tools AK -G rsa -g sha256 -s rsassa", "keyBits", 1024, "tpm_public_bad_rsa_parameters"],
      ["swtpm_setup RSA-2048 EK", "symmetric.algorithm", 0x0025, "tpm_public_unknown_symmetric"], // SYMCIPHER
      ["swtpm_setup RSA-2048 EK", "symmetric.mode", 0x0044, "tpm_public_unknown_symmetric"], // ECB
      ["swtpm_setup RSA-2048 EK", "symmetric.keyBits", 64, "tpm_public_unknown_symmetric"],
      ["swtpm_setup ECC P-384 EK", "curveID", 0x0002, "tpm_public_unknown_curve"], // P-224
      ["swtpm_setup ECC P-384 EK", "nameAlg", 0xffff, "tpm_public_unknown_hash"],
    ];
    for (const [what, field, value, code] of cases) {
      const b = publics[what]!;
      const f = fieldsOf(b).find((x) => x.name === field)!;
      expect(outcome(withValue(b, f, value)), `${what}: ${field} = 0x${value.toString(16)}`).toEqual({ code });
    }
    const rsa = publics["swtpm_setup RSA-2048 EK"]!;
    const exponentAt = rsa.length - 2 - 256 - 4;
    for (const e of [1, 2, 65536]) {
      const b = Buffer.from(rsa);
      b.writeUInt32BE(e, exponentAt);
      expect(outcome(b), `exponent ${e}`).toEqual({ code: "tpm_public_bad_rsa_parameters" });
    }
  });

  /**
   * Exactly which flips parse: a flip to a value outside a field's allowed set is refused with
   * that field's code; every other flip either fails on the shifted framing (a scheme flipped to
   * NULL drops its hash) or parses into an object with another Name. The Name is what credential
   * activation binds for the AK, so for the AK such a flip cannot pass either (next test).
   */
  it("every single-bit flip of objectAttributes or an algorithm identifier is refused at parse time or changes the Name", () => {
    for (const [what, b] of Object.entries(publics)) {
      const original = outcome(b);
      for (const f of fieldsOf(b)) {
        for (let bit = 0; bit < f.size * 8; bit++) {
          const value = (read(b, f) ^ (1 << bit)) >>> 0;
          const got = outcome(withValue(b, f, value));
          const where = `${what}: ${f.name} bit ${bit}`;
          const refused = f.allowed ? !f.allowed.includes(value) : RESERVED_ATTRIBUTE_BITS.includes(bit);
          if (refused) expect(got, where).toEqual({ code: f.code });
          else if ("code" in got) expect(got.code, where).toMatch(/^tpm_/);
          else expect(got.name, where).not.toBe((original as { name: string }).name);
        }
      }
    }
  });

  it("random changes to the AK's attributes and identifiers: reserved bits are refused, anything that parses has another Name", () => {
    const b = publics["Hallmark's AK"]!;
    const fields = fieldsOf(b);
    const originalName = (outcome(b) as { name: string }).name;
    const attributes = fields.find((f) => f.name === "objectAttributes")!;
    const reservedMask = RESERVED_ATTRIBUTE_BITS.reduce((m, bit) => (m | (1 << bit)) >>> 0, 0);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 0xffffffff }), (mask) => {
        const got = outcome(withValue(b, attributes, (read(b, attributes) ^ mask) >>> 0));
        if (mask & reservedMask) expect(got).toEqual({ code: "tpm_public_reserved_bits" });
        else expect("name" in got && got.name !== originalName).toBe(true);
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.constantFrom(...fields.filter((f) => f.allowed)), fc.integer({ min: 1, max: 0xffff }), (f, mask) => {
        const value = read(b, f) ^ mask;
        const got = outcome(withValue(b, f, value));
        if (!f.allowed!.includes(value)) expect(got).toEqual({ code: f.code });
        else if ("name" in got) expect(got.name).not.toBe(originalName);
      }),
      { numRuns: 2000 },
    );
  });

  it("credential activation refuses every AK whose attribute flip parsed: swtpm opens the credential only for the real AK's Name", async () => {
    const ek = decodeTpm2bPublic(publics["swtpm_setup RSA-2048 EK"]!);
    const activate = async (name: Buffer) => {
      const secret = randomBytes(32);
      const made = makeCredential(ek, name, secret);
      try {
        return (await client.activateCredential(ak.handle, EK_RSA, made.credentialBlob, made.secret)).equals(secret) ? "opened" : "wrong secret";
      } catch (e) {
        return (e as { code?: string }).code ?? "error";
      }
    };
    expect(await activate(objectName(decodeTpm2bPublic(ak.public)))).toBe("opened");
    const parsed: number[] = [];
    for (let bit = 0; bit < 32; bit++) {
      const flipped = Buffer.from(ak.public);
      flipped.writeUInt32BE((flipped.readUInt32BE(6) ^ (1 << bit)) >>> 0, 6);
      const got = outcome(flipped);
      if (!("name" in got)) continue;
      parsed.push(bit);
      expect(await activate(Buffer.from(got.name, "hex")), `bit ${bit}`).toBe("tpm_command_failed");
    }
    // The twelve defined attributes (Part 2 Table 31), and nothing else, get as far as activation.
    expect(parsed).toEqual([1, 2, 4, 5, 6, 7, 10, 11, 16, 17, 18, 19]);
  });
});
