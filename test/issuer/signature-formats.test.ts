import { afterAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { constants, createPublicKey, generateKeyPairSync, sign, verify } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { isHallmarkError } from "../../src/errors.js";
import type { SignatureScheme } from "../../src/hsm/signer.js";
import { createSoftwareSigner, loadFileSigner } from "../../src/issuer/file-signer.js";
import { SCHEMES, derEcdsaToRaw, jwtSchemeFor, rawEcdsaToDer, schemeForJwsAlg, x509SchemeFor } from "../../src/issuer/signature-formats.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("sigfmt");
afterAll(() => dir.remove());

const p256 = generateKeyPairSync("ec", { namedCurve: "P-256" });
const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" });

describe("ECDSA signature encodings", () => {
  it("converts r||s to a DER signature node:crypto verifies, and back", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.constantFrom([p256, 32] as const, [p384, 48] as const), (msg, [key, size]) => {
        const raw = sign(null, msg, { key: key.privateKey, dsaEncoding: "ieee-p1363" });
        const der = rawEcdsaToDer(raw)!;
        expect(verify(null, msg, { key: key.publicKey, dsaEncoding: "der" }, der)).toBe(true);
        expect(derEcdsaToRaw(der, size)!.equals(raw)).toBe(true);
        const nodeDer = sign(null, msg, { key: key.privateKey, dsaEncoding: "der" });
        expect(verify(null, msg, { key: key.publicKey, dsaEncoding: "ieee-p1363" }, derEcdsaToRaw(nodeDer, size)!)).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  it("round-trips any r||s, including leading zeros and high bits", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), (r, s) => {
        const raw = Buffer.concat([r, s]);
        expect(derEcdsaToRaw(rawEcdsaToDer(raw)!, 32)!.equals(raw)).toBe(true);
      }),
    );
  });

  it("rejects malformed input by returning undefined, never by throwing", () => {
    expect(rawEcdsaToDer(new Uint8Array(63))).toBeUndefined();
    expect(rawEcdsaToDer(new Uint8Array(0))).toBeUndefined();
    // Non-minimal, negative, oversized and trailing-byte encodings.
    expect(derEcdsaToRaw(Buffer.from("3008020200010202000101", "hex").subarray(0, 10), 32)).toBeUndefined();
    expect(derEcdsaToRaw(Buffer.from("300602010102018f", "hex"), 32)).toBeUndefined();
    expect(derEcdsaToRaw(Buffer.from("30060201010201010000", "hex"), 32)).toBeUndefined();
    expect(derEcdsaToRaw(Buffer.from("3006020101020101", "hex"), 32)?.length).toBe(64);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 120 }), (b) => void derEcdsaToRaw(b, 32)));
  });
});

describe("scheme table", () => {
  it("maps JWS algs to schemes and back, and refuses 'none' and unknown algs", () => {
    for (const scheme of Object.keys(SCHEMES) as SignatureScheme[]) expect(schemeForJwsAlg(SCHEMES[scheme].jwsAlg)).toBe(scheme);
    expect(["ES256", "ES384", "RS256", "PS256"].map(schemeForJwsAlg)).toEqual(["ecdsa-sha256", "ecdsa-sha384", "rsa-pkcs1-sha256", "rsa-pss-sha256"]);
    expect(schemeForJwsAlg("none")).toBeUndefined();
    expect(schemeForJwsAlg("HS256")).toBeUndefined();
  });

  it("chooses schemes by key type", () => {
    expect([x509SchemeFor("ec-p256"), x509SchemeFor("ec-p384"), x509SchemeFor("rsa-2048")]).toEqual(["ecdsa-sha256", "ecdsa-sha384", "rsa-pkcs1-sha256"]);
    expect([jwtSchemeFor("rsa-3072"), jwtSchemeFor("rsa-3072", "pss")]).toEqual(["rsa-pkcs1-sha256", "rsa-pss-sha256"]);
  });
});

describe("software (file) signer", () => {
  it("signs with the HSM signer's output contract: ECDSA r||s, RSA PKCS#1 and PSS", async () => {
    const ec = createSoftwareSigner(p384.privateKey, "ec");
    expect(ec.keyType).toBe("ec-p384");
    const data = Buffer.from("to be signed");
    const sig = await ec.sign(data, "ecdsa-sha384");
    expect(sig.length).toBe(96);
    expect(verify("sha384", data, { key: p384.publicKey, dsaEncoding: "ieee-p1363" }, sig)).toBe(true);

    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const rs = createSoftwareSigner(rsa.privateKey, "rsa");
    expect(verify("sha256", data, { key: rsa.publicKey, padding: constants.RSA_PKCS1_PADDING }, await rs.sign(data, "rsa-pkcs1-sha256"))).toBe(true);
    const pss = await rs.sign(data, "rsa-pss-sha256");
    expect(verify("sha256", data, { key: rsa.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, pss)).toBe(true);
    await expect(rs.sign(data, "ecdsa-sha256")).rejects.toMatchObject({ code: "hsm_scheme_mismatch" });
  });

  it("loads a PEM key file, and refuses unreadable files and unsupported keys with config_invalid", () => {
    const path = join(dir.path, "upstream.pem");
    writeFileSync(path, p256.privateKey.export({ type: "pkcs8", format: "pem" }));
    const signer = loadFileSigner(path);
    expect(signer.publicKey.equals(createPublicKey(p256.privateKey))).toBe(true);
    expect(signer.keyType).toBe("ec-p256");
    const ed = join(dir.path, "ed.pem");
    writeFileSync(ed, generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }));
    const junk = join(dir.path, "junk.pem");
    writeFileSync(junk, "not a key");
    for (const p of [join(dir.path, "absent.pem"), ed, junk]) {
      try {
        loadFileSigner(p);
        expect.unreachable();
      } catch (e) {
        expect(isHallmarkError(e) && e.code).toBe("config_invalid");
      }
    }
  });
});
