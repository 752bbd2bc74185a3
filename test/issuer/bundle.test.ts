import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { X509Certificate, generateKeyPairSync } from "node:crypto";
import { isHallmarkError } from "../../src/errors.js";
import { bundlePem, jwtJwks, oidcDiscoveryDocument, parseSpiffeBundle, spiffeBundleJwks } from "../../src/issuer/bundle.js";
import { createSoftwareSigner } from "../../src/issuer/file-signer.js";
import { createRootCa } from "../../src/issuer/x509-ca.js";
import { TrustDomain } from "../../src/spiffe/id.js";

const td = TrustDomain.parse("example.org");
const now = new Date("2031-01-01T00:00:00Z");
const ecSigner = createSoftwareSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "ec");
const rsaSigner = createSoftwareSigner(generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey, "rsa");
const roots = [await createRootCa({ signer: ecSigner, trustDomain: td, ttlSeconds: 86400, now }), await createRootCa({ signer: rsaSigner, trustDomain: td, ttlSeconds: 86400, now })];
const jwtKey = generateKeyPairSync("ec", { namedCurve: "P-384" });
const jwtAuthorities = [{ kid: "jwt-1", publicKey: jwtKey.publicKey }];

describe("SPIFFE bundle", () => {
  const doc = spiffeBundleJwks({ x509Authorities: roots, jwtAuthorities, sequence: 7, refreshHintSeconds: 300 });
  const keys = doc.keys as Array<Record<string, unknown>>;

  it("follows the bundle format: x509-svid keys with one x5c and no kid, jwt-svid keys with kid, sequence and refresh hint", () => {
    expect(doc.spiffe_sequence).toBe(7);
    expect(doc.spiffe_refresh_hint).toBe(300);
    const x509 = keys.filter((k) => k.use === "x509-svid");
    expect(x509).toHaveLength(2);
    for (const [i, k] of x509.entries()) {
      expect(k.kid).toBeUndefined();
      expect(k.x5c).toEqual([roots[i]!.toString("base64")]);
      // The key parameters are those of the certificate's key.
      const certJwk = new X509Certificate(roots[i]!).publicKey.export({ format: "jwk" });
      expect(k).toMatchObject(certJwk);
    }
    expect(x509[0]).toMatchObject({ kty: "EC", crv: "P-256" });
    expect(x509[1]).toMatchObject({ kty: "RSA", e: "AQAB" });
    const jwt = keys.filter((k) => k.use === "jwt-svid");
    expect(jwt).toEqual([{ ...jwtKey.publicKey.export({ format: "jwk" }), use: "jwt-svid", kid: "jwt-1" }]);
    expect(JSON.stringify(doc)).not.toMatch(/"d"|"p"|"q"/);
  });

  it("parses back what it publishes", () => {
    const parsed = parseSpiffeBundle(JSON.stringify(doc));
    expect(parsed.x509Authorities.map((b) => b.toString("hex"))).toEqual(roots.map((b) => b.toString("hex")));
    expect(parsed.jwtAuthorities).toHaveLength(1);
    expect(parsed.jwtAuthorities[0]!.kid).toBe("jwt-1");
    expect(parsed.jwtAuthorities[0]!.publicKey.equals(jwtKey.publicKey)).toBe(true);
    expect(parsed).toMatchObject({ sequence: 7, refreshHintSeconds: 300 });
  });

  it("ignores elements the standard says to ignore, and uses only the first x5c", () => {
    const parsed = parseSpiffeBundle({
      keys: [
        { use: "x509-svid", kty: "EC" }, // no x5c
        { use: "x509-svid", x5c: [] },
        { use: "x509-svid", x5c: [roots[0]!.toString("base64"), "garbage"] },
        { use: "x509-svid", x5c: ["bm90IGEgY2VydA=="] },
        { use: "jwt-svid", kty: "EC", crv: "P-384", x: "AA", y: "AA" }, // no kid
        { use: "jwt-svid", kid: "bad", kty: "oct", k: "AAAA" },
        { use: "something-else", kid: "x", x5c: [roots[1]!.toString("base64")] },
        "not an object",
      ],
    });
    expect(parsed.x509Authorities).toEqual([roots[0]]);
    expect(parsed.jwtAuthorities).toEqual([]);
  });

  it.each<[string, string]>([
    ["not JSON", "{"],
    ["an array", "[]"],
    ["no keys", "{}"],
    ["keys not an array", '{"keys":{}}'],
    ["a negative sequence", '{"keys":[],"spiffe_sequence":-1}'],
    ["a fractional refresh hint", '{"keys":[],"spiffe_refresh_hint":1.5}'],
  ])("refuses %s with bundle_malformed", (_what, json) => {
    expect(() => parseSpiffeBundle(json)).toThrowError(expect.objectContaining({ code: "bundle_malformed" }));
  });

  it("only ever throws bundle_malformed on arbitrary JSON and bytes", () => {
    fc.assert(
      fc.property(fc.oneof(fc.json().map((s) => s), fc.uint8Array({ maxLength: 200 }), fc.jsonValue().map((v) => JSON.stringify({ keys: [v] }))), (input) => {
        try {
          parseSpiffeBundle(input);
        } catch (e) {
          if (!isHallmarkError(e) || e.code !== "bundle_malformed") throw e;
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe("other bundle forms", () => {
  it("writes PEM that node reads back, certificate by certificate", () => {
    const pem = bundlePem(roots);
    const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!;
    expect(blocks.map((b) => new X509Certificate(b).raw.toString("hex"))).toEqual(roots.map((r) => r.toString("hex")));
  });

  it("writes a plain JWKS for OIDC verifiers with use sig and alg", () => {
    expect(jwtJwks([...jwtAuthorities, { kid: "rsa", publicKey: rsaSigner.publicKey, alg: "PS256" }]).keys).toEqual([
      { ...jwtKey.publicKey.export({ format: "jwk" }), kid: "jwt-1", use: "sig", alg: "ES384" },
      { ...rsaSigner.publicKey.export({ format: "jwk" }), kid: "rsa", use: "sig", alg: "PS256" },
    ]);
  });

  it("writes an OIDC discovery document naming the issuer and JWKS URI", () => {
    const d = oidcDiscoveryDocument({ issuer: "https://hallmark.example", jwksUri: "https://hallmark.example/.well-known/jwks.json" });
    expect(d).toMatchObject({ issuer: "https://hallmark.example", jwks_uri: "https://hallmark.example/.well-known/jwks.json", response_types_supported: ["id_token"], subject_types_supported: ["public"] });
    expect(d.id_token_signing_alg_values_supported).toContain("ES256");
  });
});
