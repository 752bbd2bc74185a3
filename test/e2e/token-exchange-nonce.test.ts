import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { calculateJwkThumbprint, createRemoteJWKSet, customFetch, exportJWK, jwtVerify } from "jose";
import * as oauth from "oauth4webapi";
import { bundleFetch } from "../helpers/bundle-fetch.js";
import { type ExchangeWorld, TD, TOKEN_EXCHANGE, TOKEN_TYPE, type Workload, auditRecords, personToken, startExchangeWorld } from "../helpers/token-exchange.js";

// DPoP server nonces at the token endpoint (RFC 9449 §8, delegation.dpop.nonce): a proof without
// the current nonce is answered use_dpop_nonce with a DPoP-Nonce header, and oauth4webapi's
// handle retries with it, as a standard client does.

const API = "https://api.github.example";
const AGENT = `${TD}/agent/code-reviewer`;

let w: ExchangeWorld;
let agent: Workload;
let as: oauth.AuthorizationServer;

beforeAll(async () => {
  w = await startExchangeWorld({ dpop: { required: true, nonce: true } });
  agent = await w.workloadOn(`${TD}/node/agents-1`, AGENT);
  await w.delegate({ actor: AGENT, scopes: ["repo:read"], audiences: [API] });
  const url = new URL(w.issuer);
  as = await oauth.processDiscoveryResponse(url, await oauth.discoveryRequest(url, { algorithm: "oauth2", [oauth.customFetch]: bundleFetch(w.bundlePem) as never }));
}, 60_000);
afterAll(async () => {
  await w?.close();
});

describe("DPoP nonces", () => {
  it("answers a proof without a nonce with use_dpop_nonce and DPoP-Nonce; oauth4webapi retries with it and gets a bound token", async () => {
    const client: oauth.Client = { client_id: AGENT };
    const keyPair = await oauth.generateKeyPair("ES256");
    const DPoP = oauth.DPoP(client, keyPair);
    const answers: Response[] = [];
    const fetchAsAgent = bundleFetch(w.bundlePem, { cert: agent.certPem, key: agent.keyPem });
    const recording = async (url: string, init: Parameters<typeof fetchAsAgent>[1]) => {
      const r = await fetchAsAgent(url, init);
      answers.push(r.clone());
      return r;
    };
    const subject = await personToken(w);
    const request = () =>
      oauth.genericTokenEndpointRequest(as, client, oauth.TlsClientAuth(), TOKEN_EXCHANGE, { subject_token: subject, subject_token_type: TOKEN_TYPE.jwt }, { DPoP, [oauth.customFetch]: recording as never });
    let retried = 0;
    let result: oauth.TokenEndpointResponse;
    try {
      result = await oauth.processGenericTokenEndpointResponse(as, client, await request());
    } catch (e) {
      expect(oauth.isDPoPNonceError(e)).toBe(true);
      retried++;
      result = await oauth.processGenericTokenEndpointResponse(as, client, await request());
    }
    expect(retried).toBe(1);
    expect(answers.map((a) => a.status)).toEqual([400, 200]);
    const [refusal, success] = answers as [Response, Response];
    expect(await refusal.json()).toMatchObject({ error: "use_dpop_nonce", code: "dpop_nonce_required" });
    expect(refusal.headers.get("dpop-nonce")).toMatch(/^[A-Za-z0-9_-]{16,}$/);
    // A nonce also comes with the success, for the next request (RFC 9449 §8.2); the same one
    // unless its period ended in between.
    expect(success.headers.get("dpop-nonce")).toMatch(/^[A-Za-z0-9_-]{16,}$/);
    expect(result.token_type).toBe("dpop");
    const jwks = createRemoteJWKSet(new URL(as.jwks_uri!), { [customFetch]: bundleFetch(w.bundlePem) as never });
    const { payload } = await jwtVerify(result.access_token, jwks, { typ: "at+jwt", issuer: w.issuer, audience: API });
    expect(payload.cnf).toEqual({ jkt: await calculateJwkThumbprint(await exportJWK(keyPair.publicKey)) });
    // One refusal and one issuance in the audit log.
    const mine = (await auditRecords(w)).filter((r) => r.event === "issue_access_token").map((r) => [r.outcome, r.code ?? null]);
    expect(mine).toEqual([
      ["refused", "dpop_nonce_required"],
      ["success", null],
    ]);
  });
});
