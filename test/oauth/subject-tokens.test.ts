import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renameSync, writeFileSync } from "node:fs";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { SignJWT, exportJWK, exportSPKI } from "jose";
import { type DelegationConfig, type OwnTokenKeys, SubjectTokenVerifier, TOKEN_TYPE } from "../../src/oauth/subject-tokens.js";
import { type SigningKey, type TestIdp, signedToken, signingKey, startTestIdp } from "../helpers/test-idp.js";
import { tempDir } from "../helpers/tmp.js";
import { refusalCode } from "../helpers/refusal.js";

/** A test identity provider (test/helpers/test-idp.ts): keys made here, JWKS over HTTPS on loopback trusted through caFile. */
const dir = tempDir("subject-tokens");
const now = new Date("2026-03-01T12:00:00Z");
const t = Math.floor(now.getTime() / 1000);
const at = (s: number) => new Date(now.getTime() + s * 1000);
const ISSUER = "https://idp.example.com";
const FILE_ISSUER = "https://file-idp.example.com";
const AUD = "https://hallmark.example.org";
const OWN = "https://hallmark.example.org";

let idp: TestIdp;
let idpKey: SigningKey;
let jwksUri: string;
let caFile: string;
let otherCaFile: string;
let ownAt: SigningKey;
let ownSvid: SigningKey;

beforeAll(async () => {
  idp = await startTestIdp(dir.path);
  ({ key: idpKey, jwksUri, caFile, otherCaFile } = idp);
  ownAt = await signingKey("at-1");
  ownSvid = await signingKey("svid-1");
});

afterAll(async () => {
  await idp.close();
  dir.remove();
});

const own = (): OwnTokenKeys => {
  const atJwks = { keys: [ownAt.jwk] };
  const svidJwks = { keys: [ownSvid.jwk] };
  return { issuer: OWN, trustDomain: "example.org", tokenEndpoint: `${OWN}/oauth2/token`, accessTokenJwks: async () => atJwks, jwtSvidJwks: async () => svidJwks };
};

type Issuers = DelegationConfig["subjectIssuers"];
const remoteIssuer = (extra: Partial<Issuers[number]> = {}): Issuers[number] => ({ issuer: ISSUER, audiences: [AUD], jwksUri, caFile, jwksRefresh: 300, ...extra });
const verifier = (issuers: Issuers = [remoteIssuer()], maxActDepth = 4) => new SubjectTokenVerifier({ issuers, own: own(), maxActDepth });

/** A person's token from the IdP, valid at `now` unless overridden; `undefined` removes a claim. */
function token(o: { claims?: Record<string, unknown>; header?: Record<string, unknown>; key?: SigningKey } = {}): Promise<string> {
  return signedToken(o.key ?? idpKey, { iss: ISSUER, sub: "alice", aud: AUD, exp: t + 600, iat: t - 10, ...o.claims }, o.header);
}

describe("subject tokens from a configured issuer", () => {
  it("verifies a token with keys fetched over HTTPS trusting caFile, and reads its claims", async () => {
    const v = verifier();
    const r = await v.verify(await token({ claims: { scope: "repo:read  issues:write", jti: "j1", cnf: { jkt: "A".repeat(43) } } }), TOKEN_TYPE.idToken, now);
    expect(r).toMatchObject({ origin: "external", issuer: ISSUER, subject: "alice", audience: [AUD], scope: ["repo:read", "issues:write"], jti: "j1", actDepth: 0, cnfJkt: "A".repeat(43) });
    expect(r.expiresAt.getTime()).toBe((t + 600) * 1000);
    expect(r.issuedAt?.getTime()).toBe((t - 10) * 1000);
  });

  it("refuses to trust a JWKS endpoint whose certificate does not chain to caFile", async () => {
    const v = verifier([remoteIssuer({ caFile: otherCaFile })]);
    const e = (await v.ready(now).catch((err: unknown) => err)) as { code: string; internal: string };
    expect(e.code).toBe("unavailable");
    expect(e.internal).toMatch(/certificate/i);
    expect(await refusalCode(v.verify(await token(), TOKEN_TYPE.jwt, now))).toBe("unavailable");
  });

  it("verifies with a JWKS file, and picks up a new file when it changes", async () => {
    const path = join(dir.path, "file-idp.jwks");
    const k1 = await signingKey("f-1");
    const k2 = await signingKey("f-2");
    writeFileSync(path, JSON.stringify({ keys: [k1.jwk] }));
    const v = verifier([{ issuer: FILE_ISSUER, audiences: [AUD], jwksFile: path, jwksRefresh: 300 }]);
    await v.ready(now);
    const byK2 = await token({ key: k2, claims: { iss: FILE_ISSUER } });
    expect(await refusalCode(v.verify(await token({ key: k1, claims: { iss: FILE_ISSUER } }), TOKEN_TYPE.jwt, now))).toBe("accepted");
    expect(await refusalCode(v.verify(byK2, TOKEN_TYPE.jwt, now))).toBe("subject_token_invalid");
    writeFileSync(`${path}.new`, JSON.stringify({ keys: [k2.jwk] }));
    renameSync(`${path}.new`, path);
    expect(await refusalCode(v.verify(byK2, TOKEN_TYPE.jwt, now))).toBe("accepted");
    // A broken rewrite keeps the keys read last.
    writeFileSync(`${path}.new`, "{ not json");
    renameSync(`${path}.new`, path);
    expect(await refusalCode(v.verify(byK2, TOKEN_TYPE.jwt, now))).toBe("accepted");
  });

  it("refuses a JWKS that publishes a private key", async () => {
    const path = join(dir.path, "private.jwks");
    const k = await signingKey("p-1");
    writeFileSync(path, JSON.stringify({ keys: [{ ...(await exportJWK(k.privateKey)), kid: "p-1" }] }));
    const v = verifier([{ issuer: FILE_ISSUER, audiences: [AUD], jwksFile: path, jwksRefresh: 300 }]);
    expect(await refusalCode(v.ready(now))).toBe("unavailable");
  });

  it("refuses an unknown issuer, another audience, an unknown token type", async () => {
    const v = verifier();
    expect(await refusalCode(v.verify(await token({ claims: { iss: "https://evil.example.com" } }), TOKEN_TYPE.jwt, now))).toBe("subject_token_issuer_untrusted");
    expect(await refusalCode(v.verify(await token({ claims: { aud: "https://other.example.com" } }), TOKEN_TYPE.jwt, now))).toBe("subject_token_audience");
    expect(await refusalCode(v.verify(await token({ claims: { aud: undefined } }), TOKEN_TYPE.jwt, now))).toBe("subject_token_audience");
    expect(await refusalCode(v.verify(await token({ claims: { aud: ["https://other.example.com", AUD] } }), TOKEN_TYPE.jwt, now))).toBe("accepted");
    expect(await refusalCode(v.verify(await token(), "urn:ietf:params:oauth:token-type:saml2", now))).toBe("oauth_unsupported_token_type");
  });

  it("refuses an expired token (no leeway on exp), a token not yet valid, and one without exp or sub", async () => {
    const v = verifier();
    expect(await refusalCode(v.verify(await token({ claims: { exp: t - 3600 } }), TOKEN_TYPE.jwt, now))).toBe("subject_token_expired");
    expect(await refusalCode(v.verify(await token({ claims: { exp: t - 5 } }), TOKEN_TYPE.jwt, now))).toBe("subject_token_expired");
    expect(await refusalCode(v.verify(await token({ claims: { nbf: t + 120 } }), TOKEN_TYPE.jwt, now))).toBe("subject_token_expired");
    expect(await refusalCode(v.verify(await token({ claims: { nbf: t + 10 } }), TOKEN_TYPE.jwt, now))).toBe("accepted");
    expect(await refusalCode(v.verify(await token({ claims: { iat: t + 120 } }), TOKEN_TYPE.jwt, now))).toBe("subject_token_expired");
    expect(await refusalCode(v.verify(await token({ claims: { exp: undefined } }), TOKEN_TYPE.jwt, now))).toBe("subject_token_invalid");
    expect(await refusalCode(v.verify(await token({ claims: { sub: undefined } }), TOKEN_TYPE.jwt, now))).toBe("subject_token_invalid");
  });

  it("refuses alg none and an HMAC signature keyed with the issuer's public key", async () => {
    const v = verifier();
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const claims = { iss: ISSUER, sub: "alice", aud: AUD, exp: t + 600 };
    expect(await refusalCode(v.verify(`${b64({ alg: "none", kid: idpKey.kid })}.${b64(claims)}.`, TOKEN_TYPE.jwt, now))).toBe("subject_token_invalid");
    expect(await refusalCode(v.verify(`${b64({ alg: "none", kid: idpKey.kid })}.${b64(claims)}.AA`, TOKEN_TYPE.jwt, now))).toBe("subject_token_invalid");
    for (const secret of [await exportSPKI(idpKey.publicKey), JSON.stringify(idpKey.jwk)]) {
      const hs = await new SignJWT(claims).setProtectedHeader({ alg: "HS256", kid: idpKey.kid }).sign(new TextEncoder().encode(secret));
      expect(await refusalCode(v.verify(hs, TOKEN_TYPE.jwt, now))).toBe("subject_token_invalid");
    }
  });

  it("never takes keys from the token: jwk, jku and x5u headers naming an attacker's key are ignored", async () => {
    const v = verifier();
    const attacker = await signingKey(idpKey.kid);
    let served = 0;
    const evil = createServer((_, res) => {
      served++;
      res.end(JSON.stringify({ keys: [attacker.jwk] }));
    });
    await new Promise<void>((resolve) => evil.listen(0, "127.0.0.1", resolve));
    const evilUrl = `https://127.0.0.1:${(evil.address() as AddressInfo).port}/jwks`;
    try {
      for (const header of [{ jwk: attacker.jwk }, { jku: evilUrl }, { x5u: evilUrl }, { jwk: attacker.jwk, kid: undefined }]) {
        const forged = await token({ key: attacker, header });
        expect(await refusalCode(v.verify(forged, TOKEN_TYPE.jwt, now)), JSON.stringify(Object.keys(header))).toBe("subject_token_invalid");
      }
      expect(served).toBe(0);
    } finally {
      await new Promise((resolve) => evil.close(resolve));
    }
  });

  it("refuses a token larger than 16 KiB", async () => {
    const big = await token({ claims: { pad: "x".repeat(16 * 1024) } });
    expect(await refusalCode(verifier().verify(big, TOKEN_TYPE.jwt, now))).toBe("subject_token_invalid");
    expect(await refusalCode(verifier().verify("a.b", TOKEN_TYPE.jwt, now))).toBe("subject_token_invalid");
  });

  it("counts the act chain and refuses one deeper than maxActDepth, and a malformed one", async () => {
    const v = verifier([remoteIssuer()], 2);
    const two = { sub: "spiffe://example.org/agent/a", iss: OWN, act: { sub: "spiffe://example.org/agent/b" } };
    const r = await v.verify(await token({ claims: { act: two } }), TOKEN_TYPE.jwt, now);
    expect(r.actDepth).toBe(2);
    expect(r.act).toEqual(two);
    const three = { sub: "x", act: { sub: "y", act: { sub: "z" } } };
    expect(await refusalCode(v.verify(await token({ claims: { act: three } }), TOKEN_TYPE.jwt, now))).toBe("act_too_deep");
    // Depth is counted before shape: a hostile nesting stops at the limit.
    let deep: Record<string, unknown> = { sub: "leaf" };
    for (let i = 0; i < 200; i++) deep = { sub: `s${i}`, act: deep };
    expect(await refusalCode(v.verify(await token({ claims: { act: deep } }), TOKEN_TYPE.jwt, now))).toBe("act_too_deep");
    for (const act of ["spiffe://example.org/a", { iss: OWN }, { sub: 7 }, { sub: "a", act: [] }, { sub: "a", iss: 3 }, null]) {
      expect(await refusalCode(v.verify(await token({ claims: { act } }), TOKEN_TYPE.jwt, now)), JSON.stringify(act)).toBe("subject_token_invalid");
    }
  });

  it("reads scope from scope or scp, and refuses a malformed one", async () => {
    const v = verifier();
    const scopeOf = async (claims: Record<string, unknown>) => (await v.verify(await token({ claims }), TOKEN_TYPE.jwt, now)).scope;
    expect(await scopeOf({ scope: "a b a" })).toEqual(["a", "b"]);
    expect(await scopeOf({ scp: ["x", "y"] })).toEqual(["x", "y"]);
    expect(await scopeOf({ scp: "x y" })).toEqual(["x", "y"]);
    expect(await scopeOf({ scope: "a", scp: ["b"] })).toEqual(["a"]);
    expect(await scopeOf({})).toBeUndefined();
    for (const claims of [{ scope: 'a "b"' }, { scp: ["a", 1] }, { scope: 5 }, { scp: { a: 1 } }]) {
      expect(await refusalCode(scopeOf(claims)), JSON.stringify(claims)).toBe("subject_token_invalid");
    }
  });

  it("reads may_act, and refuses one that names nobody or is not an object", async () => {
    const v = verifier();
    const r = await v.verify(await token({ claims: { may_act: { sub: "spiffe://example.org/agent/a", iss: OWN } } }), TOKEN_TYPE.jwt, now);
    expect(r.mayAct).toEqual({ sub: "spiffe://example.org/agent/a", iss: OWN });
    for (const may_act of [{}, "spiffe://example.org/agent/a", { sub: 1 }]) {
      expect(await refusalCode(v.verify(await token({ claims: { may_act } }), TOKEN_TYPE.jwt, now)), JSON.stringify(may_act)).toBe("subject_token_invalid");
    }
  });

  it("picks up a key the issuer rotated to, refetching on an unknown kid at most once per 30 s, and refreshes after jwksRefresh", async () => {
    const v = verifier([remoteIssuer({ jwksRefresh: 300 })]);
    await v.ready(at(-60));
    const before = idp.fetches;
    const rotated = await signingKey("idp-2");
    idp.published = [idpKey.jwk, rotated.jwk];
    try {
      expect(await refusalCode(v.verify(await token({ key: rotated }), TOKEN_TYPE.jwt, now))).toBe("accepted");
      expect(idp.fetches).toBe(before + 1);
      // Made-up kids within 30 s of that fetch: refused without asking the issuer again.
      const bogus = await signingKey("made-up");
      expect(await refusalCode(v.verify(await token({ key: bogus }), TOKEN_TYPE.jwt, at(1)))).toBe("subject_token_invalid");
      expect(await refusalCode(v.verify(await token({ key: bogus }), TOKEN_TYPE.jwt, at(29)))).toBe("subject_token_invalid");
      expect(idp.fetches).toBe(before + 1);
      expect(await refusalCode(v.verify(await token({ key: bogus, claims: { exp: t + 3600 } }), TOKEN_TYPE.jwt, at(31)))).toBe("subject_token_invalid");
      expect(idp.fetches).toBe(before + 2);
      // The issuer withdraws idp-1: within jwksRefresh of the last fetch (at 31 s) it is still
      // trusted; after, the keys are fetched again, and the token's kid is not asked for twice.
      idp.published = [rotated.jwk];
      const byOld = await token({ claims: { exp: t + 3600 } });
      expect(await refusalCode(v.verify(byOld, TOKEN_TYPE.jwt, at(300)))).toBe("accepted");
      expect(await refusalCode(v.verify(byOld, TOKEN_TYPE.jwt, at(332)))).toBe("subject_token_invalid");
      expect(idp.fetches).toBe(before + 3);
    } finally {
      idp.published = [idpKey.jwk];
    }
  });
});

describe("Hallmark's own tokens as subject tokens (chains)", () => {
  const atToken = (claims: Record<string, unknown>, key = ownAt, typ = "at+jwt") =>
    new SignJWT({ iss: OWN, sub: "alice", aud: "https://api.example.com", exp: t + 300, iat: t, jti: "at-1", client_id: "spiffe://example.org/agent/a", ...claims })
      .setProtectedHeader({ alg: "ES256", kid: key.kid, typ })
      .sign(key.privateKey);
  const svid = (claims: Record<string, unknown>, key = ownSvid) =>
    new SignJWT({ sub: "spiffe://example.org/agent/b", aud: [OWN], exp: t + 300, iat: t, ...claims }).setProtectedHeader({ alg: "ES256", kid: key.kid, typ: "JWT" }).sign(key.privateKey);

  it("verifies its own access tokens with the access-token keys, and only those", async () => {
    const v = verifier();
    const r = await v.verify(await atToken({ act: { sub: "spiffe://example.org/agent/a", iss: "example.org" }, cnf: { jkt: "B".repeat(43) } }), TOKEN_TYPE.accessToken, now);
    expect(r).toMatchObject({ origin: "hallmark-access-token", issuer: OWN, subject: "alice", actDepth: 1, cnfJkt: "B".repeat(43), jti: "at-1" });
    expect(await refusalCode(v.verify(await atToken({}, { ...ownSvid, kid: ownAt.kid }), TOKEN_TYPE.accessToken, now))).toBe("subject_token_invalid");
    expect(await refusalCode(v.verify(await atToken({}), TOKEN_TYPE.idToken, now))).toBe("subject_token_invalid");
  });

  it("verifies JWT-SVIDs of its trust domain addressed to it, and refuses others", async () => {
    const v = verifier();
    const r = await v.verify(await svid({}), TOKEN_TYPE.jwt, now);
    expect(r).toMatchObject({ origin: "hallmark-jwt-svid", subject: "spiffe://example.org/agent/b", audience: [OWN] });
    expect(await refusalCode(v.verify(await svid({ aud: [`${OWN}/oauth2/token`] }), TOKEN_TYPE.jwt, now))).toBe("accepted");
    expect(await refusalCode(v.verify(await svid({ aud: ["https://elsewhere.example.com"] }), TOKEN_TYPE.jwt, now))).toBe("subject_token_audience");
    expect(await refusalCode(v.verify(await svid({}, { ...ownAt, kid: ownSvid.kid }), TOKEN_TYPE.jwt, now))).toBe("subject_token_invalid");
    expect(await refusalCode(v.verify(await svid({}), TOKEN_TYPE.accessToken, now))).toBe("subject_token_invalid");
    expect(await refusalCode(v.verify(await svid({ sub: "spiffe://other.org/agent/b" }), TOKEN_TYPE.jwt, now))).toBe("subject_token_invalid");
  });
});
