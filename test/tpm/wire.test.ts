import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { TPMA_OBJECT_RESERVED, TPM_ALG } from "../../src/tpm/constants.js";
import { generateKeyPairSync, sign } from "node:crypto";
import { kdfa, kdfe } from "../../src/tpm/kdf.js";
import { publicKeyFromTpmtPublic, spkiOf, verifyTpmSignature } from "../../src/tpm/keys.js";
import {
  type TpmtPublic,
  decodeTpm2bPublic,
  decodeTpmsAttest,
  decodeTpmtSignature,
  encodeTpm2bPublic,
  encodeTpmtSignature,
} from "../../src/tpm/structures.js";
import { haveSharedFixtures, sharedFixture, warnIfNoSharedFixtures } from "../helpers/fixtures.js";

const HASH: Record<number, string> = { 4: "sha1", 11: "sha256", 12: "sha384", 13: "sha512" };

describe("KDFa and KDFe known answers (go-tpm test vectors)", () => {
  warnIfNoSharedFixtures("KDF known-answer vectors");
  it.skipIf(!haveSharedFixtures)("KDFa matches every vector", () => {
    const vectors = JSON.parse(sharedFixture("tpm/go-tpm-testvectors-kdfa.json").toString()) as Array<Record<string, string | number>>;
    expect(vectors.length).toBeGreaterThan(5);
    for (const v of vectors) {
      const got = kdfa(HASH[v.HashAlg as number]!, Buffer.from(String(v.Key), "hex"), String(v.Label), Buffer.from(String(v.ContextU), "hex"), Buffer.from(String(v.ContextV), "hex"), Number(v.Bits));
      expect(got.toString("hex"), String(v.Name)).toBe(String(v.Result));
    }
  });
  it.skipIf(!haveSharedFixtures)("KDFe matches every vector", () => {
    const vectors = JSON.parse(sharedFixture("tpm/go-tpm-testvectors-kdfe.json").toString()) as Array<Record<string, string | number>>;
    for (const v of vectors) {
      const got = kdfe(HASH[v.HashAlg as number]!, Buffer.from(String(v.Z), "hex"), String(v.Label), Buffer.from(String(v.ContextU), "hex"), Buffer.from(String(v.ContextV), "hex"), Number(v.Bits));
      expect(got.toString("hex"), String(v.Name)).toBe(String(v.Result));
    }
  });
});

const eccPublic = fc.record({
  nameAlg: fc.constantFrom(TPM_ALG.SHA256, TPM_ALG.SHA384),
  // Any combination of the defined attribute bits; the reserved ones are refused (test/tpm/public-strict.test.ts).
  objectAttributes: fc.integer({ min: 0, max: 0xffffffff }).map((a) => (a & ~TPMA_OBJECT_RESERVED) >>> 0),
  emptyPolicy: fc.boolean(),
  policy: fc.uint8Array({ minLength: 48, maxLength: 48 }),
  x: fc.uint8Array({ minLength: 32, maxLength: 32 }),
  y: fc.uint8Array({ minLength: 32, maxLength: 32 }),
}).map((r): TpmtPublic => ({
  type: TPM_ALG.ECC,
  nameAlg: r.nameAlg,
  objectAttributes: r.objectAttributes,
  // An authPolicy is empty or one nameAlg digest.
  authPolicy: r.emptyPolicy ? Buffer.alloc(0) : Buffer.from(r.policy.subarray(0, r.nameAlg === TPM_ALG.SHA256 ? 32 : 48)),
  symmetric: { algorithm: TPM_ALG.NULL },
  scheme: { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 },
  curveId: 3,
  kdf: { scheme: TPM_ALG.NULL },
  x: Buffer.from(r.x),
  y: Buffer.from(r.y),
  raw: Buffer.alloc(0),
}));

describe("TPM structures", () => {
  it("round-trips TPM2B_PUBLIC and keeps the exact bytes", () => {
    fc.assert(
      fc.property(eccPublic, (p) => {
        const bytes = encodeTpm2bPublic(p);
        const back = decodeTpm2bPublic(bytes);
        expect(encodeTpm2bPublic(back)).toEqual(bytes);
        expect(back.raw).toEqual(bytes.subarray(2));
      }),
      { numRuns: 200 },
    );
  });

  it("round-trips TPMT_SIGNATURE", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 48 }), fc.uint8Array({ minLength: 1, maxLength: 48 }), (r, s) => {
        const bytes = encodeTpmtSignature({ sigAlg: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256, ecc: { r: Buffer.from(r), s: Buffer.from(s) } });
        expect(encodeTpmtSignature(decodeTpmtSignature(bytes))).toEqual(bytes);
      }),
    );
  });

  it("only ever raises its own typed errors on random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        for (const decode of [decodeTpm2bPublic, decodeTpmsAttest, decodeTpmtSignature]) {
          try {
            decode(Buffer.from(bytes));
          } catch (e) {
            expect((e as { name?: string }).name).toBe("HallmarkError");
            expect((e as { code: string }).code).toMatch(/^tpm_/);
          }
        }
      }),
      { numRuns: 3000 },
    );
  });

  it("refuses trailing bytes, a short size and unknown tags", () => {
    const p = encodeTpm2bPublic(fc.sample(eccPublic, 1)[0]!);
    expect(() => decodeTpm2bPublic(Buffer.concat([p, Buffer.from([0])]))).toThrowError(expect.objectContaining({ code: "tpm_trailing_bytes" }));
    expect(() => decodeTpm2bPublic(p.subarray(0, p.length - 1))).toThrowError(expect.objectContaining({ code: "tpm_truncated" }));
    const keyedHash = Buffer.from(p);
    keyedHash.writeUInt16BE(TPM_ALG.KEYEDHASH, 2);
    expect(() => decodeTpm2bPublic(keyedHash)).toThrowError(expect.objectContaining({ code: "tpm_unknown_tag" }));
    expect(() => decodeTpmsAttest(Buffer.from("ff544347801800", "hex"))).toThrowError(expect.objectContaining({ code: "tpm_truncated" }));
    expect(() => decodeTpmsAttest(Buffer.alloc(64))).toThrowError(expect.objectContaining({ code: "tpm_quote_bad_magic" }));
  });

  it.skipIf(!haveSharedFixtures)("parses a real GCP vTPM quote and AK (go-attestation test data), and refuses every truncation", () => {
    const gcp = JSON.parse(sharedFixture("tpm/go-attestation-windows_gcp_shielded_vm.json").toString()) as Record<string, unknown>;
    const find = (o: unknown, key: string): string | undefined => {
      if (!o || typeof o !== "object") return undefined;
      for (const [k, v] of Object.entries(o)) {
        if (k.toLowerCase() === key && typeof v === "string") return v;
        const inner = find(v, key);
        if (inner) return inner;
      }
      return undefined;
    };
    const quoteB64 = find(gcp, "quote");
    expect(quoteB64, "the fixture has a quote").toBeTruthy();
    const quote = Buffer.from(quoteB64!, "base64");
    const attest = decodeTpmsAttest(quote);
    expect(attest.quote?.pcrSelect[0]?.pcrs.length).toBe(24);
    for (let n = 0; n < quote.length; n++) expect(() => decodeTpmsAttest(quote.subarray(0, n))).toThrowError(expect.objectContaining({ name: "HallmarkError" }));
  });
});

const stripZeros = (b: Buffer) => b.subarray(b.findIndex((v) => v !== 0));

describe("ECC curves", () => {
  it.each([
    ["P-256", 0x0003, "prime256v1", TPM_ALG.SHA256],
    ["P-384", 0x0004, "secp384r1", TPM_ALG.SHA384],
    ["P-521", 0x0005, "secp521r1", TPM_ALG.SHA512],
  ] as const)("%s: a TPMT_PUBLIC gives Node's key back, and a TPMT_SIGNATURE made with it verifies", (_, curveId, namedCurve, hashAlg) => {
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve });
    const jwk = publicKey.export({ format: "jwk" });
    const p: TpmtPublic = {
      type: TPM_ALG.ECC,
      nameAlg: TPM_ALG.SHA256,
      objectAttributes: 0x00050072,
      authPolicy: Buffer.alloc(0),
      symmetric: { algorithm: TPM_ALG.NULL },
      scheme: { scheme: TPM_ALG.ECDSA, hashAlg },
      curveId,
      kdf: { scheme: TPM_ALG.NULL },
      // A TPM may drop a coordinate's leading zero bytes; the key must come back all the same.
      x: stripZeros(Buffer.from(jwk.x!, "base64url")),
      y: stripZeros(Buffer.from(jwk.y!, "base64url")),
      raw: Buffer.alloc(0),
    };
    const back = decodeTpm2bPublic(encodeTpm2bPublic(p));
    expect(spkiOf(back).equals(publicKey.export({ type: "spki", format: "der" }))).toBe(true);
    const message = Buffer.from("attest");
    const hash = ({ [TPM_ALG.SHA256]: "sha256", [TPM_ALG.SHA384]: "sha384", [TPM_ALG.SHA512]: "sha512" } as Record<number, string>)[hashAlg]!;
    const rs = sign(hash, message, { key: privateKey, dsaEncoding: "ieee-p1363" });
    const half = rs.length / 2;
    const sig = decodeTpmtSignature(encodeTpmtSignature({ sigAlg: TPM_ALG.ECDSA, hashAlg, ecc: { r: rs.subarray(0, half), s: rs.subarray(half) } }));
    expect(verifyTpmSignature(publicKeyFromTpmtPublic(back), sig, message)).toBe(true);
    expect(verifyTpmSignature(publicKeyFromTpmtPublic(back), sig, Buffer.from("attesT"))).toBe(false);
  });
});

describe("TPM response codes", () => {
  it("names format-one and format-zero codes with their handle, session or parameter", async () => {
    const { responseCodeName } = await import("../../src/tpm/rc.js");
    expect(responseCodeName(0x99d)).toBe("TPM_RC_POLICY_FAIL (session 1)"); // 0x800 session bit | n=1 << 8 | 0x09d
    expect(responseCodeName(0xa9d)).toBe("TPM_RC_POLICY_FAIL (session 2)");
    expect(responseCodeName(0x1c4)).toBe("TPM_RC_VALUE (parameter 1)");
    expect(responseCodeName(0x18b)).toBe("TPM_RC_HANDLE (handle 1)");
    expect(responseCodeName(0x902)).toBe("TPM_RC_OBJECT_MEMORY");
    expect(responseCodeName(0x922)).toBe("TPM_RC_RETRY");
    expect(responseCodeName(0x14a)).toBe("TPM_RC_NV_UNINITIALIZED");
  });
});
