import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { X509Certificate, generateKeyPairSync } from "node:crypto";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { decodeBasicConstraints, decodeExtKeyUsage, decodeGeneralNames, decodeKeyUsage, oidString, readExtensions } from "../../src/issuer/der-reader.js";
import { tempDir } from "../helpers/tmp.js";
import { oid, readTlv } from "../../src/issuer/der.js";
import { isAcceptedKey, publicKeyOf, readSpki } from "../../src/issuer/spki.js";

describe("SubjectPublicKeyInfo reader", () => {
  it.each<[string, () => ReturnType<typeof generateKeyPairSync>["publicKey"], string, boolean]>([
    ["P-256", () => generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey, "ec", true],
    ["P-384", () => generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey, "ec", true],
    ["RSA 2048", () => generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey, "rsa", true],
    ["RSA 1024", () => generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey, "rsa", false],
    ["P-521", () => generateKeyPairSync("ec", { namedCurve: "P-521" }).publicKey, "unsupported", false],
    ["Ed25519", () => generateKeyPairSync("ed25519").publicKey, "unsupported", false],
  ])("reads a %s key the way node does", (_what, make, kind, accepted) => {
    const key = make();
    const info = readSpki(key.export({ type: "spki", format: "der" }));
    expect(info?.kind).toBe(kind);
    expect(isAcceptedKey(info)).toBe(accepted);
    if (info?.kind === "rsa") expect(info.modulusBits).toBe(key.asymmetricKeyDetails?.modulusLength);
    if (info && info.kind !== "unsupported") expect(publicKeyOf(info).equals(key)).toBe(true);
  });

  it("refuses a point that is not on the curve when making the key", () => {
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });
    spki[spki.length - 1] = (spki[spki.length - 1] ?? 0) ^ 0x01;
    const info = readSpki(spki);
    expect(info?.kind).toBe("ec");
    expect(() => publicKeyOf(info as Extract<typeof info, { kind: "ec" }>)).toThrow();
  });

  it("never throws on random bytes, and never calls a truncated or padded key well-formed", () => {
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => void readSpki(b)));
    fc.assert(
      fc.property(fc.integer({ min: 1, max: spki.length - 1 }), (cut) => {
        expect(readSpki(spki.subarray(0, cut))).toBeUndefined();
        expect(readSpki(Buffer.concat([spki, Buffer.alloc(cut)]))).toBeUndefined();
      }),
    );
  });
});

describe("DER reader", () => {
  it("reads OIDs back as our encoder and node write them", () => {
    fc.assert(
      fc.property(fc.constantFrom(0, 1, 2), fc.integer({ min: 0, max: 39 }), fc.array(fc.integer({ min: 0, max: 2 ** 32 }), { maxLength: 8 }), (a, b, rest) => {
        const dotted = [a, b, ...rest].join(".");
        const der = oid(dotted);
        expect(oidString(der, readTlv(der, 0)!)).toBe(dotted);
      }),
    );
  });

  it("reads the extensions of a certificate OpenSSL made", () => {
    const dir = tempDir("der-reader");
    try {
      const pem = execFileSync(
        "openssl",
        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", join(dir.path, "k.pem"), "-subj", "/O=x", "-days", "1",
          "-addext", "subjectAltName=URI:spiffe://example.org/w,DNS:a.example,email:x@example.org",
          "-addext", "keyUsage=critical,digitalSignature,keyAgreement",
          "-addext", "extendedKeyUsage=serverAuth,clientAuth",
          "-addext", "basicConstraints=critical,CA:FALSE"],
        { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] },
      );
      const der = new X509Certificate(pem).raw;
      // Certificate → tbsCertificate → [3] → Extensions
      const tbs = readTlv(der, readTlv(der, 0)!.start)!;
      let at = tbs.start;
      let t = readTlv(der, at)!;
      while (t.tag !== 0xa3) {
        at = t.end;
        t = readTlv(der, at)!;
      }
      const exts = readExtensions(der, readTlv(der, t.start)!);
      if (!exts || exts === "duplicate") throw new Error("extensions not read");
      expect(decodeGeneralNames(exts.get("2.5.29.17")!.value)).toEqual({ uris: ["spiffe://example.org/w"], dnsNames: ["a.example"], other: 1 });
      expect(exts.get("2.5.29.15")!.critical).toBe(true);
      expect(decodeKeyUsage(exts.get("2.5.29.15")!.value)).toBe((1 << 0) | (1 << 4));
      expect(decodeExtKeyUsage(exts.get("2.5.29.37")!.value)).toEqual(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
      expect(decodeBasicConstraints(exts.get("2.5.29.19")!.value)).toEqual({ cA: false });
      expect(exts.get("2.5.29.17")!.critical).toBe(false);
    } finally {
      dir.remove();
    }
  });

  it("decoders never throw on random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (b) => {
        decodeKeyUsage(b);
        decodeBasicConstraints(b);
        decodeExtKeyUsage(b);
        decodeGeneralNames(b);
        const t = readTlv(b, 0);
        if (t) readExtensions(b, t);
      }),
      { numRuns: 2000 },
    );
  });

  it("decodes key usage bits in RFC 5280 order", () => {
    // digitalSignature (bit 0) and keyEncipherment (bit 2): 1010 0000, 5 unused bits.
    expect(decodeKeyUsage(Buffer.from("030205a0", "hex"))).toBe(0b101);
    // keyCertSign (5), cRLSign (6), digitalSignature (0): 1000 0110, 1 unused bit.
    expect(decodeKeyUsage(Buffer.from("03020186", "hex"))).toBe(0b1100001);
    // decipherOnly is bit 8, in the second octet.
    expect(decodeKeyUsage(Buffer.from("0303070080", "hex"))).toBe(1 << 8);
    expect(decodeKeyUsage(Buffer.from("030208ff", "hex"))).toBeUndefined();
  });
});
