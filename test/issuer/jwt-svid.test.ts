import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { generateKeyPairSync } from "node:crypto";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import type { SignatureScheme } from "../../src/hsm/signer.js";
import { jwtJwks } from "../../src/issuer/bundle.js";
import { createSoftwareSigner } from "../../src/issuer/file-signer.js";
import { mintJwtSvid } from "../../src/issuer/jwt-svid.js";
import { TrustDomain } from "../../src/spiffe/id.js";

const td = TrustDomain.parse("example.org");
const id = td.id("/workload/api");
const now = new Date("2031-03-01T12:00:00Z");

const keys = {
  ec256: createSoftwareSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "ec256"),
  ec384: createSoftwareSigner(generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey, "ec384"),
  rsa: createSoftwareSigner(generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey, "rsa"),
};

describe("mintJwtSvid", () => {
  it.each<[keyof typeof keys, SignatureScheme | undefined, string]>([
    ["ec256", undefined, "ES256"],
    ["ec384", undefined, "ES384"],
    ["rsa", undefined, "RS256"],
    ["rsa", "rsa-pss-sha256", "PS256"],
  ])("mints a JWT-SVID with a %s key (%s) that jose verifies against our JWKS as %s", async (k, scheme, alg) => {
    const signer = keys[k];
    const { token, expiresAt } = await mintJwtSvid({ signer, scheme, kid: `kid-${k}`, spiffeId: id, audience: ["https://api.example"], ttlSeconds: 300, now });
    const jwks = createLocalJWKSet(jwtJwks([{ kid: `kid-${k}`, publicKey: signer.publicKey, alg }]) as never);
    const { payload, protectedHeader } = await jwtVerify(token, jwks, { audience: "https://api.example", currentDate: now, algorithms: [alg] });
    expect(protectedHeader).toEqual({ alg, kid: `kid-${k}`, typ: "JWT" });
    expect(payload).toEqual({ sub: id.toString(), aud: "https://api.example", iat: now.getTime() / 1000, exp: now.getTime() / 1000 + 300 });
    expect(expiresAt.getTime()).toBe(now.getTime() + 300_000);
    // Expired after its TTL; not valid for another audience; not valid under another kid's key.
    await expect(jwtVerify(token, jwks, { currentDate: new Date(now.getTime() + 301_000) })).rejects.toMatchObject({ code: "ERR_JWT_EXPIRED" });
    await expect(jwtVerify(token, jwks, { audience: "other", currentDate: now })).rejects.toMatchObject({ code: "ERR_JWT_CLAIM_VALIDATION_FAILED" });
    const wrongKey = createLocalJWKSet(jwtJwks([{ kid: `kid-${k}`, publicKey: keys.ec256 === signer ? keys.ec384.publicKey : keys.ec256.publicKey }]) as never);
    await expect(jwtVerify(token, wrongKey, { currentDate: now })).rejects.toThrow();
  });

  it("puts several audiences in an array", async () => {
    const { token } = await mintJwtSvid({ signer: keys.ec256, kid: "k", spiffeId: id, audience: ["a", "b"], ttlSeconds: 60, now });
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwtJwks([{ kid: "k", publicKey: keys.ec256.publicKey }]) as never), { audience: "b", currentDate: now });
    expect(payload.aud).toEqual(["a", "b"]);
    expect(decodeProtectedHeader(token).alg).toBe("ES256");
  });

  it("fails verification when any character of the payload or signature changes", async () => {
    const { token } = await mintJwtSvid({ signer: keys.ec256, kid: "k", spiffeId: id, audience: ["a"], ttlSeconds: 60, now });
    const jwks = createLocalJWKSet(jwtJwks([{ kid: "k", publicKey: keys.ec256.publicKey }]) as never);
    const firstDot = token.indexOf(".");
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: firstDot + 1, max: token.length - 2 }), async (i) => {
        const c = token[i]!;
        if (c === ".") return;
        const tampered = token.slice(0, i) + (c === "A" ? "B" : "A") + token.slice(i + 1);
        await expect(jwtVerify(tampered, jwks, { currentDate: now })).rejects.toThrow();
      }),
      { numRuns: 60 },
    );
  });

  it.each<[string, unknown]>([
    ["no audience", []],
    ["an empty audience", [""]],
    ["a non-string audience", [42]],
    ["duplicate audiences", ["a", "a"]],
    ["too many audiences", Array.from({ length: 17 }, (_, i) => `a${i}`)],
    ["an over-long audience", ["x".repeat(513)]],
    ["a control character", ["a\nb"]],
    ["a C1 control", ["a\u0085b"]],
    ["a bidirectional override (U+202E)", ["a\u202Eb"]],
    ["a bidirectional isolate (U+2068)", ["a\u2068b"]],
    ["a lone surrogate", ["a\uD800"]],
    ["not an array", "a"],
  ])("refuses %s with invalid_audience", async (_what, audience) => {
    await expect(mintJwtSvid({ signer: keys.ec256, kid: "k", spiffeId: id, audience: audience as string[], ttlSeconds: 60, now })).rejects.toMatchObject({
      code: "invalid_audience",
    });
  });

  it.each([[0], [-5], [1.5], [86401], [Number.NaN]])("refuses a TTL of %s seconds with ttl_invalid (default max one day)", async (ttlSeconds) => {
    await expect(mintJwtSvid({ signer: keys.ec256, kid: "k", spiffeId: id, audience: ["a"], ttlSeconds, now })).rejects.toMatchObject({ code: "ttl_invalid" });
  });

  it("honours a configured maximum TTL, and refuses a subject without a path", async () => {
    await expect(mintJwtSvid({ signer: keys.ec256, kid: "k", spiffeId: id, audience: ["a"], ttlSeconds: 120, maxTtlSeconds: 60, now })).rejects.toMatchObject({ code: "ttl_invalid" });
    await expect(mintJwtSvid({ signer: keys.ec256, kid: "k", spiffeId: td.id(""), audience: ["a"], ttlSeconds: 60, now })).rejects.toMatchObject({ code: "invalid_spiffe_id" });
  });
});
