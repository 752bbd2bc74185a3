import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { calculateJwkThumbprint, createRemoteJWKSet, customFetch, exportJWK, jwtVerify } from "jose";
import * as oauth from "oauth4webapi";
import { verifyDpopBoundRequest } from "../../src/oauth/resource-server.js";
import { bundleFetch } from "../helpers/bundle-fetch.js";
import {
  type ExchangeWorld,
  IDP_ISSUER,
  PERSON,
  TD,
  TOKEN_EXCHANGE,
  TOKEN_TYPE,
  type Workload,
  auditRecords,
  personToken,
  startExchangeWorld,
} from "../helpers/token-exchange.js";

// Token exchange end to end (issue 11): a person's token from a test IdP (JWKS over HTTPS on
// loopback), exchanged by an agent with a real X509-SVID over mutual TLS, the client side driven
// by oauth4webapi (discovery, DPoP, tls_client_auth), the result verified with jose against
// /oauth2/jwks and by the resource-server helper. This server does not require DPoP, so that the
// tests can show when a token is bound and when it may be Bearer.

const API = "https://api.github.example";
const AGENT1 = `${TD}/agent/code-reviewer`;
const AGENT2 = `${TD}/agent/summariser`;

let w: ExchangeWorld;
let agent1: Workload;
let agent2: Workload;
let as: oauth.AuthorizationServer;
let jwks: ReturnType<typeof createRemoteJWKSet>;
/** agent2 may act for tokens Hallmark issued for the person (the chain's second link). */
let chainDelegation: string;

beforeAll(async () => {
  w = await startExchangeWorld({ dpop: { required: false, nonce: false } });
  agent1 = await w.workloadOn(`${TD}/node/agents-1`, AGENT1);
  agent2 = await w.workloadOn(`${TD}/node/agents-2`, AGENT2);
  await w.delegate({ actor: AGENT1, scopes: ["repo:read", "issues:write"], audiences: [API], max_ttl_seconds: 300 });
  chainDelegation = await w.delegate({ actor: AGENT2, subject_issuer: w.issuer, subject: PERSON, scopes: ["repo:read"], audiences: [API], max_ttl_seconds: 120 });
  const url = new URL(w.issuer);
  as = await oauth.processDiscoveryResponse(url, await oauth.discoveryRequest(url, { algorithm: "oauth2", [oauth.customFetch]: bundleFetch(w.bundlePem) as never }));
  jwks = createRemoteJWKSet(new URL(as.jwks_uri!), { [customFetch]: bundleFetch(w.bundlePem) as never });
}, 60_000);
afterAll(async () => {
  await w?.close();
});

/** One exchange as oauth4webapi makes it: tls_client_auth over mutual TLS with the agent's X509-SVID, and a DPoP proof when a handle is given. */
async function exchange(agent: Workload, params: Record<string, string>, dpop?: oauth.DPoPHandle) {
  const client: oauth.Client = { client_id: agent.spiffeId };
  const response = await oauth.genericTokenEndpointRequest(as, client, oauth.TlsClientAuth(), TOKEN_EXCHANGE, params, {
    ...(dpop ? { DPoP: dpop } : {}),
    [oauth.customFetch]: bundleFetch(w.bundlePem, { cert: agent.certPem, key: agent.keyPem }) as never,
  });
  expect(response.headers.get("cache-control")).toBe("no-store");
  return oauth.processGenericTokenEndpointResponse(as, client, response);
}

async function introspect(token: string, agent: Workload = agent1) {
  const client: oauth.Client = { client_id: agent.spiffeId };
  const response = await oauth.introspectionRequest(as, client, oauth.TlsClientAuth(), token, {
    [oauth.customFetch]: bundleFetch(w.bundlePem, { cert: agent.certPem, key: agent.keyPem }) as never,
  });
  return (await oauth.processIntrospectionResponse(as, client, response)) as Record<string, unknown>;
}

const dpopKey = async () => {
  const keyPair = await oauth.generateKeyPair("ES256");
  return { keyPair, jkt: await calculateJwkThumbprint(await exportJWK(keyPair.publicKey)) };
};
/** oauth4webapi's DPoP handle: it signs a proof for each request and keeps the server's nonce. */
const handle = (keyPair: oauth.CryptoKeyPair) => oauth.DPoP({}, keyPair);

/** What a resource server receives when oauth4webapi calls it with the token (and the DPoP handle). */
async function resourceRequest(token: string, dpop?: oauth.DPoPHandle) {
  let seen: Headers | undefined;
  const capture = async (_url: string, init: { headers?: Record<string, string> }) => {
    seen = new Headers(init.headers);
    return new Response("{}", { status: 200 });
  };
  await oauth.protectedResourceRequest(token, "GET", new URL(`${API}/repos/acme/widgets`), undefined, undefined, { ...(dpop ? { DPoP: dpop } : {}), [oauth.customFetch]: capture as never });
  return { authorization: seen!.get("authorization") ?? undefined, dpop: seen!.get("dpop") ?? undefined };
}
const atResourceServer = (r: { authorization: string | undefined; dpop: string | undefined }) =>
  verifyDpopBoundRequest({ ...r, method: "GET", url: `${API}/repos/acme/widgets`, jwks, issuer: w.issuer, audience: API });

async function refusalOf(p: Promise<unknown>): Promise<{ code?: string; error?: string }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof oauth.ResponseBodyError) return { error: e.error, code: (e.cause as { code?: string }).code };
    return { code: (e as { code?: string }).code };
  }
  return { code: "accepted" };
}

describe("an agent exchanges a person's token (oauth4webapi, DPoP, tls_client_auth)", () => {
  it("answers RFC 8693 §2.2.1 with a DPoP-bound RFC 9068 token that jose verifies against /oauth2/jwks", async () => {
    const { keyPair, jkt } = await dpopKey();
    const subject = await personToken(w);
    const r = await exchange(agent1, { subject_token: subject, subject_token_type: TOKEN_TYPE.idToken, scope: "repo:read", audience: API }, handle(keyPair));
    expect(r).toMatchObject({ token_type: "dpop", issued_token_type: TOKEN_TYPE.accessToken, scope: "repo:read" });
    expect(r.expires_in).toBeGreaterThan(250);
    expect(r.expires_in).toBeLessThanOrEqual(300);
    const { payload, protectedHeader } = await jwtVerify(r.access_token, jwks, { typ: "at+jwt", issuer: w.issuer, audience: API });
    expect(protectedHeader.typ).toBe("at+jwt");
    expect(payload).toMatchObject({
      sub: PERSON,
      client_id: AGENT1,
      scope: "repo:read",
      act: { sub: AGENT1, iss: TD },
      cnf: { jkt },
      "urn:hallmark:attestation": { attestor: "join_token", node: `${TD}/node/agents-1` },
    });
    expect((payload.act as Record<string, unknown>).act).toBeUndefined();
    // exp within the subject token's and the delegation's bounds.
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(300);
  });

  it("the resource-server helper accepts the token with oauth4webapi's proof, and refuses it as Bearer", async () => {
    const { keyPair } = await dpopKey();
    const dpop = handle(keyPair);
    const r = await exchange(agent1, { subject_token: await personToken(w), subject_token_type: TOKEN_TYPE.jwt, audience: API }, dpop);
    const claims = await atResourceServer(await resourceRequest(r.access_token, dpop));
    expect(claims).toMatchObject({ sub: PERSON, act: { sub: AGENT1 } });
    // The same token as Bearer, and as DPoP with a proof by another key: refused.
    const asBearer = await refusalOf(atResourceServer(await resourceRequest(r.access_token)));
    expect(asBearer.code).toBe("access_token_dpop_bound");
    const thief = handle((await dpopKey()).keyPair);
    expect((await refusalOf(atResourceServer(await resourceRequest(r.access_token, thief)))).code).toBe("dpop_proof_invalid");
  });

  it("introspection shows act, cnf and token_type DPoP for a bound token (the holes: act missing from introspection, cnf ignored)", async () => {
    const { keyPair, jkt } = await dpopKey();
    const r = await exchange(agent1, { subject_token: await personToken(w), subject_token_type: TOKEN_TYPE.jwt, audience: API }, handle(keyPair));
    const i = await introspect(r.access_token, agent2);
    expect(i).toMatchObject({ active: true, sub: PERSON, client_id: AGENT1, act: { sub: AGENT1, iss: TD }, cnf: { jkt }, token_type: "DPoP", scope: "repo:read issues:write", aud: API });
  });

  it("without a proof (policy allows it here) the token is Bearer and unbound; requested_token_type jwt is honoured", async () => {
    const r = await exchange(agent1, { subject_token: await personToken(w), subject_token_type: TOKEN_TYPE.jwt, requested_token_type: TOKEN_TYPE.jwt, audience: API });
    expect(r).toMatchObject({ token_type: "bearer", issued_token_type: TOKEN_TYPE.jwt });
    const { payload } = await jwtVerify(r.access_token, jwks, { typ: "at+jwt", issuer: w.issuer, audience: API });
    expect(payload.cnf).toBeUndefined();
    expect((await introspect(r.access_token)).token_type).toBe("Bearer");
    await expect(atResourceServer(await resourceRequest(r.access_token))).resolves.toMatchObject({ sub: PERSON });
  });

  it("a delegation that requires DPoP refuses an exchange without a proof even where the server does not", async () => {
    const strict = `${TD}/agent/strict`;
    const agent = await w.workloadOn(`${TD}/node/agents-strict`, strict);
    await w.delegate({ actor: strict, scopes: ["repo:read"], audiences: [API], require_dpop: true });
    const subject = await personToken(w);
    expect(await refusalOf(exchange(agent, { subject_token: subject, subject_token_type: TOKEN_TYPE.jwt }))).toEqual({ error: "invalid_dpop_proof", code: "dpop_required" });
    const r = await exchange(agent, { subject_token: subject, subject_token_type: TOKEN_TYPE.jwt }, handle((await dpopKey()).keyPair));
    expect(r.token_type).toBe("dpop");
  });

  it("leaves one audit record per exchange: who, for whom, what was asked, and why it was granted; never the token", async () => {
    const subject = await personToken(w, { jti: "audit-me" });
    const r = await exchange(agent1, { subject_token: subject, subject_token_type: TOKEN_TYPE.jwt, scope: "issues:write", audience: API }, handle((await dpopKey()).keyPair));
    const { payload } = await jwtVerify(r.access_token, jwks, { typ: "at+jwt" });
    const records = await auditRecords(w);
    const mine = records.filter((x) => x.serial === payload.jti);
    expect(mine.map((x) => [x.event, x.outcome])).toEqual([["issue_access_token", "success"]]);
    expect(mine[0]).toMatchObject({ actor: AGENT1, spiffeId: AGENT1 });
    // The answer names that record's leaf in the transparency log (index = seq − 1).
    expect((r as { log_index?: number }).log_index).toBe(mine[0]!.seq - 1);
    expect(mine[0]!.details).toMatchObject({
      subject: PERSON,
      subject_issuer: IDP_ISSUER,
      dpop_bound: true,
      requested: { scope: "issues:write", audience: [API], dpop: true },
      subject_origin: "external",
    });
    expect(String(mine[0]!.details.reason)).toContain("delegation");
    const all = JSON.stringify(records);
    expect(all).not.toContain(r.access_token.split(".")[2]);
    expect(all).not.toContain(subject.split(".")[2]);
  });
});

describe("may_act (RFC 8693 §4.4) is enforced with or without an actor token", () => {
  it("refuses an agent the subject token's may_act does not name when no actor token is sent, and grants the one it names", async () => {
    const forOther = await personToken(w, { may_act: { sub: AGENT2 } });
    expect(await refusalOf(exchange(agent1, { subject_token: forOther, subject_token_type: TOKEN_TYPE.jwt, audience: API }))).toEqual({ error: "invalid_grant", code: "may_act_refused" });
    const forMe = await personToken(w, { may_act: { sub: AGENT1, iss: TD } });
    await expect(exchange(agent1, { subject_token: forMe, subject_token_type: TOKEN_TYPE.jwt, audience: API })).resolves.toMatchObject({ token_type: "bearer" });
  });

  it("with the agent's own JWT-SVID as actor token, may_act still applies and the actor must be the client", async () => {
    const actorToken = (await agent1.node.fetchJwt([w.issuer], AGENT1)).token;
    const forOther = await personToken(w, { may_act: { sub: AGENT2 } });
    const base = { subject_token_type: TOKEN_TYPE.jwt, audience: API, actor_token: actorToken, actor_token_type: TOKEN_TYPE.jwt };
    expect(await refusalOf(exchange(agent1, { ...base, subject_token: forOther }))).toMatchObject({ code: "may_act_refused" });
    await expect(exchange(agent1, { ...base, subject_token: await personToken(w) })).resolves.toMatchObject({ token_type: "bearer" });
    // agent2 presents agent1's JWT-SVID as its actor token.
    expect(await refusalOf(exchange(agent2, { ...base, subject_token: await personToken(w) }))).toEqual({ error: "invalid_grant", code: "actor_not_client" });
  });
});

describe("chains: a Hallmark token as the subject of a second exchange", () => {
  async function firstLink(dpop?: oauth.DPoPHandle) {
    return exchange(agent1, { subject_token: await personToken(w), subject_token_type: TOKEN_TYPE.jwt, audience: API }, dpop);
  }

  it("nests act {sub: agent2, act: {sub: agent1}}; a bound subject token is exchanged only with a proof by its key, and the binding stays", async () => {
    const k1 = await dpopKey();
    const t1 = await firstLink(handle(k1.keyPair));
    // agent2 proves with a key of its own: the bound token cannot be moved to another key.
    const k2 = await dpopKey();
    const moved = await refusalOf(exchange(agent2, { subject_token: t1.access_token, subject_token_type: TOKEN_TYPE.accessToken }, handle(k2.keyPair)));
    expect(moved).toEqual({ error: "invalid_dpop_proof", code: "dpop_proof_invalid" });
    // Nor dropped: without a proof it is refused too.
    expect(await refusalOf(exchange(agent2, { subject_token: t1.access_token, subject_token_type: TOKEN_TYPE.accessToken }))).toEqual({ error: "invalid_dpop_proof", code: "dpop_required" });
    // With a proof by the key it is bound to (handed to agent2 with the token), it is exchanged and stays bound to it.
    const t2 = await exchange(agent2, { subject_token: t1.access_token, subject_token_type: TOKEN_TYPE.accessToken }, handle(k1.keyPair));
    expect(t2).toMatchObject({ token_type: "dpop", scope: "repo:read" });
    const { payload } = await jwtVerify(t2.access_token, jwks, { typ: "at+jwt", issuer: w.issuer, audience: API });
    expect(payload).toMatchObject({ sub: PERSON, client_id: AGENT2, act: { sub: AGENT2, iss: TD, act: { sub: AGENT1, iss: TD } }, cnf: { jkt: k1.jkt } });
    expect(await introspect(t2.access_token)).toMatchObject({ active: true, act: { sub: AGENT2, act: { sub: AGENT1 } }, token_type: "DPoP" });
    // The second link's lifetime is the chain delegation's (120 s), within the first's.
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(120);
  });

  it("an unbound first link may be exchanged by agent2 with its own key: the new token is bound to it", async () => {
    const t1 = await firstLink();
    const k2 = await dpopKey();
    const t2 = await exchange(agent2, { subject_token: t1.access_token, subject_token_type: TOKEN_TYPE.accessToken }, handle(k2.keyPair));
    const { payload } = await jwtVerify(t2.access_token, jwks, { typ: "at+jwt" });
    expect(payload.cnf).toEqual({ jkt: k2.jkt });
  });

  it("scope cannot widen along the chain", async () => {
    const t1 = await exchange(agent1, { subject_token: await personToken(w), subject_token_type: TOKEN_TYPE.jwt, audience: API, scope: "issues:write" });
    // The chain delegation allows repo:read only, and t1 holds issues:write only: nothing in common.
    expect(await refusalOf(exchange(agent2, { subject_token: t1.access_token, subject_token_type: TOKEN_TYPE.accessToken }))).toEqual({ error: "invalid_scope", code: "scope_not_allowed" });
  });

  it("revoking the first link makes the second inactive at introspection, and the first can no longer be exchanged", async () => {
    const t1 = await firstLink();
    const t2 = await exchange(agent2, { subject_token: t1.access_token, subject_token_type: TOKEN_TYPE.accessToken });
    expect((await introspect(t2.access_token)).active).toBe(true);
    const client: oauth.Client = { client_id: AGENT1 };
    const revoked = await oauth.revocationRequest(as, client, oauth.TlsClientAuth(), t1.access_token, {
      [oauth.customFetch]: bundleFetch(w.bundlePem, { cert: agent1.certPem, key: agent1.keyPem }) as never,
    });
    await oauth.processRevocationResponse(revoked);
    expect(await introspect(t2.access_token)).toEqual({ active: false });
    expect(await refusalOf(exchange(agent2, { subject_token: t1.access_token, subject_token_type: TOKEN_TYPE.accessToken }))).toEqual({ error: "invalid_grant", code: "subject_token_revoked" });
    const refusal = (await auditRecords(w)).filter((x) => x.event === "issue_access_token" && x.code === "subject_token_revoked");
    expect(refusal.length).toBe(1);
    expect(refusal[0]).toMatchObject({ outcome: "refused", actor: AGENT2, details: { subject: PERSON, subject_issuer: w.issuer } });
  });

  it("deleting the second link's delegation makes it inactive; evicting agent1's node makes both inactive", async () => {
    const t1 = await firstLink();
    const t2 = await exchange(agent2, { subject_token: t1.access_token, subject_token_type: TOKEN_TYPE.accessToken });
    await w.admin("DELETE", `/admin/delegations/${chainDelegation}`);
    expect(await introspect(t2.access_token)).toEqual({ active: false });
    expect((await introspect(t1.access_token)).active).toBe(true);
    // A new chain delegation; then agent1's node is evicted: its tokens and every token derived from them.
    await w.delegate({ actor: AGENT2, subject_issuer: w.issuer, subject: PERSON, scopes: ["repo:read"], audiences: [API], max_ttl_seconds: 120 });
    const t1b = await firstLink();
    const t2b = await exchange(agent2, { subject_token: t1b.access_token, subject_token_type: TOKEN_TYPE.accessToken });
    expect((await introspect(t2b.access_token, agent2)).active).toBe(true);
    await w.admin("POST", "/admin/nodes/evict", { spiffe_id: agent1.nodeId });
    expect(await introspect(t1b.access_token, agent2)).toEqual({ active: false });
    expect(await introspect(t2b.access_token, agent2)).toEqual({ active: false });
  });
});
