import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { CborMap, CborTagged, type CborValue, decodeCbor } from "../../src/cbor/decode.js";
import { encodeCbor } from "../../src/cbor/encode.js";

const hex = (s: string) => Buffer.from(s.replace(/\s/g, ""), "hex");

const value: fc.Arbitrary<CborValue> = fc.letrec<{ v: CborValue }>((tie) => ({
  v: fc.oneof(
    { depthSize: "small" },
    fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
    fc.string(),
    fc.uint8Array({ maxLength: 64 }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("v"), { maxLength: 5 }),
    fc.uniqueArray(fc.tuple(fc.oneof(fc.integer(), fc.string()), tie("v")), { maxLength: 5, selector: ([k]) => k }).map((entries) => new CborMap(entries)),
  ),
})).v;

describe("strict CBOR", () => {
  it("round-trips what it encodes", () => {
    fc.assert(
      fc.property(value, (v) => {
        const bytes = encodeCbor(v);
        expect(encodeCbor(decodeCbor(bytes))).toEqual(bytes);
      }),
      { numRuns: 300 },
    );
  });

  it("only ever throws its own error on random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        try {
          decodeCbor(bytes);
        } catch (e) {
          expect((e as { code?: string }).code).toBe("cbor_malformed");
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("decodes RFC 8949 Appendix A examples, including indefinite lengths and tags", () => {
    expect(decodeCbor(hex("1903e8"))).toBe(1000);
    expect(decodeCbor(hex("3903e7"))).toBe(-1000);
    expect(decodeCbor(hex("1bffffffffffffffff"))).toBe(18446744073709551615n);
    expect(decodeCbor(hex("f93c00"))).toBe(1);
    expect(Buffer.from(decodeCbor(hex("5f42010243030405ff")) as Uint8Array)).toEqual(Buffer.from([1, 2, 3, 4, 5]));
    expect(decodeCbor(hex("7f657374726561646d696e67ff"))).toBe("streaming");
    expect(decodeCbor(hex("9f018202039f0405ffff"))).toEqual([1, [2, 3], [4, 5]]);
    expect(decodeCbor(hex("bf61610161629f0203ffff"))).toEqual(new CborMap([["a", 1], ["b", [2, 3]]] as Array<[CborValue, CborValue]>));
    const tagged = decodeCbor(hex("d24101"));
    expect(tagged).toBeInstanceOf(CborTagged);
    expect((tagged as CborTagged).tag).toBe(18);
  });

  it.each([
    ["a duplicate map key", "a2616101616102"],
    ["trailing bytes", "0102"],
    ["a truncated string", "4501"],
    ["a length past the input", "5b00000000ffffffff"],
    ["an array count past the input", "9b00000000ffffffff"],
    ["a lone break", "ff"],
    ["invalid UTF-8", "62c328"],
    ["a map key that is a byte string", "a14100 01"],
    ["reserved additional information", "1c"],
    ["nesting beyond the limit", "81".repeat(40) + "01"],
  ])("refuses %s", (_what, bytes) => {
    expect(() => decodeCbor(hex(bytes))).toThrowError(expect.objectContaining({ code: "cbor_malformed" }));
  });
});
