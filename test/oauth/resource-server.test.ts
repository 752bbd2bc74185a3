import { beforeAll, describe, expect, it } from "vitest";
import { createHash, randomUUID } from "node:crypto";
import { type CryptoKey, type JWK, type JWTVerifyGetKey, SignJWT, calculateJwkThumbprint, createLocalJWKSet, exportJWK, generateKeyPair } from "jose";
import { verifyDpopBoundRequest, type DpopBoundRequest } from "../../src/oauth/resource-server.js";
import { MemoryDpopReplayCache } from "../../src/oauth/dpop.js";
import { refusalCode } from "../helpers/refusal.js";

/** An authorization server's access-token key and an agent's DPoP key, both made here; tokens and proofs crafted with jose. */
const ISSUER = "https://hallmark.example.org";
const API = "https://api.example.com";
const URL_ = `${API}/repos/acme/widgets/issues`;
const now = new Date("2026-03-01T12:00:00Z");
const t = Math.floor(now.getTime() / 1000);

let as: { privateKey: CryptoKey; publicKey: CryptoKey };
let jwks: JWTVerifyGetKey;
let agent: { privateKey: CryptoKey; publicKey: CryptoKey };
let agentJwk: JWK;
let jkt: string;

beforeAll(async () => {
  as = await generateKeyPair("ES256", { extractable: true });
  jwks = createLocalJWKSet({ keys: [{ ...(await exportJWK(as.publicKey)), kid: "at-1", alg: "ES256", use: "sig" }] });
  agent = await generateKeyPair("ES256", { extractable: true });
  agentJwk = await exportJWK(agent.publicKey);
  jkt = await calculateJwkThumbprint(agentJwk, "sha256");
});

function accessToken(claims: Record<string, unknown> = {}, typ = "at+jwt"): Promise<string> {
  return new SignJWT({ iss: ISSUER, sub: "alice", aud: API, exp: t + 300, iat: t, jti: randomUUID(), client_id: "spiffe://example.org/agent/a", scope: "issues:write", cnf: { jkt }, act: { sub: "spiffe://example.org/agent/a" }, ...claims })
    .setProtectedHeader({ alg: "ES256", kid: "at-1", typ })
    .sign(as.privateKey);
}

function proof(token: string, o: { htm?: string; htu?: string; key?: CryptoKey; jwk?: JWK } = {}): Promise<string> {
  const ath = createHash("sha256").update(token).digest("base64url");
  return new SignJWT({ jti: randomUUID(), htm: o.htm ?? "POST", htu: o.htu ?? URL_, iat: t, ath })
    .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk: o.jwk ?? agentJwk })
    .sign(o.key ?? agent.privateKey);
}

const request = (token: string, dpop: string | undefined, extra: Partial<DpopBoundRequest> = {}): DpopBoundRequest => ({
  authorization: `DPoP ${token}`,
  dpop,
  method: "POST",
  url: `${URL_}?state=open`,
  jwks,
  issuer: ISSUER,
  audience: API,
  now,
  ...extra,
});

describe("resource server: access token plus DPoP proof", () => {
  it("accepts a bound token with a proof for this request, and answers the token's claims", async () => {
    const token = await accessToken();
    const claims = await verifyDpopBoundRequest(request(token, await proof(token)));
    expect(claims).toMatchObject({ sub: "alice", scope: "issues:write", act: { sub: "spiffe://example.org/agent/a" }, cnf: { jkt } });
  });

  it("refuses the same bound token presented as Bearer, with or without a proof", async () => {
    const token = await accessToken();
    expect(await refusalCode(verifyDpopBoundRequest(request(token, undefined, { authorization: `Bearer ${token}` })))).toBe("access_token_dpop_bound");
    expect(await refusalCode(verifyDpopBoundRequest(request(token, await proof(token), { authorization: `Bearer ${token}` })))).toBe("access_token_dpop_bound");
  });

  it("refuses a bound token sent as DPoP without a proof", async () => {
    const token = await accessToken();
    expect(await refusalCode(verifyDpopBoundRequest(request(token, undefined)))).toBe("dpop_required");
  });

  it("refuses a proof for another URL or another method", async () => {
    const token = await accessToken();
    expect(await refusalCode(verifyDpopBoundRequest(request(token, await proof(token, { htu: `${API}/admin` }))))).toBe("dpop_proof_invalid");
    expect(await refusalCode(verifyDpopBoundRequest(request(token, await proof(token, { htm: "DELETE" }))))).toBe("dpop_proof_invalid");
  });

  it("refuses a replayed proof (the process-wide in-memory cache by default, or the one given)", async () => {
    const token = await accessToken();
    const p = await proof(token);
    expect(await refusalCode(verifyDpopBoundRequest(request(token, p)))).toBe("accepted");
    expect(await refusalCode(verifyDpopBoundRequest(request(token, p)))).toBe("dpop_proof_replayed");
    const replay = new MemoryDpopReplayCache();
    const q = await proof(token);
    expect(await refusalCode(verifyDpopBoundRequest(request(token, q, { replay })))).toBe("accepted");
    expect(await refusalCode(verifyDpopBoundRequest(request(token, q, { replay })))).toBe("dpop_proof_replayed");
  });

  it("refuses a proof by another key than cnf.jkt names (a stolen token with the thief's own key)", async () => {
    const token = await accessToken();
    const thief = await generateKeyPair("ES256", { extractable: true });
    expect(await refusalCode(verifyDpopBoundRequest(request(token, await proof(token, { key: thief.privateKey, jwk: await exportJWK(thief.publicKey) }))))).toBe("dpop_proof_invalid");
  });

  it("refuses a proof made for another access token (ath)", async () => {
    const token = await accessToken();
    const other = await accessToken();
    expect(await refusalCode(verifyDpopBoundRequest(request(token, await proof(other))))).toBe("dpop_proof_invalid");
  });

  it("accepts an unbound token as Bearer, and as DPoP only with a proof that verifies", async () => {
    const token = await accessToken({ cnf: undefined });
    expect(await refusalCode(verifyDpopBoundRequest(request(token, undefined, { authorization: `Bearer ${token}` })))).toBe("accepted");
    expect(await refusalCode(verifyDpopBoundRequest(request(token, await proof(token))))).toBe("accepted");
    expect(await refusalCode(verifyDpopBoundRequest(request(token, await proof(token, { htm: "GET" }))))).toBe("dpop_proof_invalid");
  });

  it("refuses a token that is not an RFC 9068 access token for this audience and issuer, or has expired", async () => {
    const cases: [string, Promise<string>][] = [
      ["typ JWT (an ID token or JWT-SVID of the same issuer)", accessToken({}, "JWT")],
      ["another audience", accessToken({ aud: "https://other.example.com" })],
      ["another issuer", accessToken({ iss: "https://evil.example.com" })],
      ["expired", accessToken({ exp: t - 1 })],
    ];
    for (const [name, pending] of cases) {
      const token = await pending;
      expect(await refusalCode(verifyDpopBoundRequest(request(token, await proof(token)))), name).toBe("access_token_invalid");
    }
    expect(await refusalCode(verifyDpopBoundRequest(request("x", undefined, { authorization: undefined })))).toBe("access_token_invalid");
    expect(await refusalCode(verifyDpopBoundRequest(request("x", undefined, { authorization: "Basic abc" })))).toBe("access_token_invalid");
  });
});
