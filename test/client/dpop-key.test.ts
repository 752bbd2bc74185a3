import { describe, expect, it } from "vitest";
import { createHash, generateKeyPairSync } from "node:crypto";
import { calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, generateKeyPair } from "jose";
import { DpopKey } from "../../src/client/dpop-key.js";
import { DpopVerifier, MemoryDpopReplayCache } from "../../src/oauth/dpop.js";

/**
 * The agent's DPoP proofs (RFC 9449 §4.2), checked by the server's own verifier (every check of
 * §4.3), for each key type the client accepts; and the key files it refuses.
 */

const verifier = () => new DpopVerifier({ replay: new MemoryDpopReplayCache(), iatWindowSeconds: 60 });
const TOKEN_URL = "https://hallmark.example.org:8443/oauth2/token";

describe("DpopKey", () => {
  it.each([
    ["EC P-256 (the default)", () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "ES256"],
    ["EC P-384", () => generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey, "ES384"],
    ["Ed25519", () => generateKeyPairSync("ed25519").privateKey, "EdDSA"],
  ])("signs proofs with a %s key that the server's verifier accepts, bound to its thumbprint", async (_name, make, alg) => {
    const pem = make().export({ type: "pkcs8", format: "pem" }).toString();
    const key = await DpopKey.fromPem(pem);
    expect(key.alg).toBe(alg);
    const proof = await key.proof({ htm: "POST", htu: `${TOKEN_URL}?x=1#f` });
    const verified = await verifier().verify({ header: proof, method: "POST", url: TOKEN_URL, now: new Date() });
    expect(verified.jkt).toBe(key.jkt);
    expect(await calculateJwkThumbprint(verified.jwk, "sha256")).toBe(key.jkt);
    // §4.2: htu without query and fragment; the jwk carries the public key only.
    expect(decodeJwt(proof).htu).toBe(TOKEN_URL);
    expect(Object.keys(decodeProtectedHeader(proof).jwk as object).sort()).toEqual(alg === "EdDSA" ? ["crv", "kty", "x"] : ["crv", "kty", "x", "y"]);
  });

  it("carries ath for the token it accompanies and the server's nonce, and a new jti every time", async () => {
    const { key, pem } = await DpopKey.generate();
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect((await DpopKey.fromPem(pem)).jkt).toBe(key.jkt);
    const a = decodeJwt(await key.proof({ htm: "GET", htu: "https://api.example/x", accessToken: "tok.en.value", nonce: "n-1" }));
    const b = decodeJwt(await key.proof({ htm: "GET", htu: "https://api.example/x" }));
    expect(a.ath).toBe(createHash("sha256").update("tok.en.value").digest("base64url"));
    expect(a.nonce).toBe("n-1");
    expect(b.ath).toBeUndefined();
    expect(b.nonce).toBeUndefined();
    expect(a.jti).not.toBe(b.jti);
  });

  it("takes a WebCrypto key pair (jose's generateKeyPair) as well", async () => {
    const pair = await generateKeyPair("ES256");
    const key = await DpopKey.from(pair);
    const verified = await verifier().verify({ header: await key.proof({ htm: "POST", htu: TOKEN_URL }), method: "POST", url: TOKEN_URL, now: new Date() });
    expect(verified.jkt).toBe(key.jkt);
  });

  it("refuses an RSA key, a public key and something that is not a key, with dpop_key_unreadable naming the source", async () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const cases = [
      rsa.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
      generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "pem" }).toString(),
      "not a key",
    ];
    for (const pem of cases) {
      await expect(DpopKey.fromPem(pem, "--dpop-key k.pem")).rejects.toMatchObject({ code: "dpop_key_unreadable", message: expect.stringMatching(/^--dpop-key k\.pem /) });
    }
  });
});
