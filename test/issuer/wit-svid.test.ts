import { generateKeyPairSync } from "node:crypto";
import fc from "fast-check";
import { type JWK, jwtVerify } from "jose";
import { describe, expect, it } from "vitest";
import { isHallmarkError } from "../../src/errors.js";
import { createSoftwareSigner } from "../../src/issuer/file-signer.js";
import { mintWitSvid, validateWitPublicJwk } from "../../src/issuer/wit-svid.js";
import { TrustDomain } from "../../src/spiffe/id.js";

const id = TrustDomain.parse("example.org").id("/workload/api");
const now = new Date("2031-03-01T12:00:00Z");
const signer = createSoftwareSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "wit");
const jwkOf = (k: ReturnType<typeof generateKeyPairSync>["publicKey"], alg: string) => ({ ...(k.export({ format: "jwk" }) as JWK), alg });

describe("validateWitPublicJwk", () => {
  it.each([
    ["EC P-384, ES384, with a kid and use sig (kept as sent)", { ...jwkOf(generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey, "ES384"), kid: "k-1", use: "sig" }],
    ["EC P-521, ES512", jwkOf(generateKeyPairSync("ec", { namedCurve: "P-521" }).publicKey, "ES512")],
    ["RSA 2048, RS256", jwkOf(generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey, "RS256")],
    ["RSA 2048, PS512", jwkOf(generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey, "PS512")],
  ])("accepts %s", (_name, jwk) => {
    expect(validateWitPublicJwk(jwk)).toEqual(jwk);
  });

  it("random JSON values only ever raise one of its own codes", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        try {
          validateWitPublicJwk(v);
          return false; // no random value is a valid key
        } catch (e) {
          return isHallmarkError(e) && ["wit_key_malformed", "wit_key_private", "wit_key_unsupported"].includes(e.code);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("mintWitSvid", () => {
  const jwk = jwkOf(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey, "ES256");

  it("header alg, kid, typ wit+jwt only; claims sub, cnf.jwk, exp, iat, nbf, jti; no aud, no iss; jose verifies it", async () => {
    const { token, expiresAt, jti } = await mintWitSvid({ signer, scheme: "ecdsa-sha256", kid: "wit-1", spiffeId: id, publicKey: jwk, ttlSeconds: 600, now });
    const { payload, protectedHeader } = await jwtVerify(token, signer.publicKey, { typ: "wit+jwt", currentDate: now });
    expect(protectedHeader).toEqual({ alg: "ES256", kid: "wit-1", typ: "wit+jwt" });
    const iat = now.getTime() / 1000;
    expect(payload).toEqual({ sub: id.toString(), cnf: { jwk }, exp: iat + 600, iat, nbf: iat, jti });
    expect(expiresAt).toEqual(new Date(now.getTime() + 600_000));
  });

  it("refuses a TTL over its ceiling, a private key, and a subject without a path", async () => {
    const base = { signer, scheme: "ecdsa-sha256" as const, kid: "wit-1", spiffeId: id, publicKey: jwk, ttlSeconds: 600, now };
    await expect(mintWitSvid({ ...base, ttlSeconds: 601, maxTtlSeconds: 600 })).rejects.toMatchObject({ code: "ttl_invalid" });
    const priv = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" });
    await expect(mintWitSvid({ ...base, publicKey: { ...priv, alg: "ES256" } })).rejects.toMatchObject({ code: "wit_key_private" });
    await expect(mintWitSvid({ ...base, spiffeId: TrustDomain.parse("example.org").id("") })).rejects.toMatchObject({ code: "invalid_spiffe_id" });
  });
});
