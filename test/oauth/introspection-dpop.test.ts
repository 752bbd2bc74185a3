import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPair } from "jose";
import { httpsRaw } from "../helpers/https.js";
import {
  type ExchangeWorld,
  TD,
  TOKEN_TYPE,
  type Workload,
  auditRecords,
  dpopProof,
  form,
  personToken,
  postToken,
  startExchangeWorld,
} from "../helpers/token-exchange.js";

/**
 * Issue 11, "ath at introspection-with-proof": a resource server that introspects a DPoP-bound
 * token sends along the proof it received (dpop_proof, dpop_method, dpop_url, a Hallmark
 * extension) and Hallmark answers active only when that proof verifies for the token and that
 * request. Real server (SoftHSM2, SQLite), a token from a real exchange with DPoP, the resource
 * server a workload authenticated by its X509-SVID over mutual TLS; the audit log read beside it.
 */
const API = "https://api.github.example";
const RS_URL = `${API}/repos/acme/widgets/issues`;
const AGENT = `${TD}/agent/code-reviewer`;

let w: ExchangeWorld;
let agent: Workload;
let rs: Workload;
let agentKey: Awaited<ReturnType<typeof generateKeyPair>>;
let token: string;
let unbound: string;

const ath = (t: string) => createHash("sha256").update(t).digest("base64url");
/** The proof the agent sends the resource server with `t`. */
const rsProof = (over: { htu?: string; htm?: string; ath?: string; jti?: string } = {}, key = agentKey, t = token) =>
  dpopProof(key, { htu: RS_URL, htm: "GET", ath: ath(t), ...over });

async function introspect(fields: Record<string, string | undefined>) {
  const r = await httpsRaw(`${w.issuer}/oauth2/introspect`, {
    method: "POST",
    body: form(fields),
    headers: { "content-type": "application/x-www-form-urlencoded" },
    ca: w.bundlePem,
    cert: rs.certPem,
    key: rs.keyPem,
  });
  return { status: r.status, body: r.body as Record<string, unknown> };
}
const withProof = async (proof: string, over: Record<string, string | undefined> = {}, t = token) =>
  (await introspect({ token: t, dpop_proof: proof, dpop_method: "GET", dpop_url: `${RS_URL}?state=open`, ...over })).body;

let seen = 0;
/** The introspection audit records since the last call. */
async function newIntrospections() {
  const all = (await auditRecords(w)).filter((r) => r.event === "oauth_introspect");
  const fresh = all.slice(seen);
  seen = all.length;
  return fresh.map((r) => ({ outcome: r.outcome, code: r.code ?? null, details: r.details as Record<string, unknown> }));
}

beforeAll(async () => {
  w = await startExchangeWorld({ dpop: { required: false, nonce: false } });
  agent = await w.workloadOn(`${TD}/node/agents-1`, AGENT);
  rs = await w.workloadOn(`${TD}/node/api-1`, `${TD}/api/github`);
  await w.delegate({ actor: AGENT, scopes: ["repo:read"], audiences: [API], max_ttl_seconds: 300 });
  agentKey = await generateKeyPair("ES256", { extractable: true });
  const exchange = async (dpop?: string) => {
    const r = await postToken(w, agent, { subject_token: await personToken(w), subject_token_type: TOKEN_TYPE.jwt, audience: API, scope: "repo:read" }, dpop);
    if (r.status !== 200) throw new Error(`exchange answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body as { access_token: string; token_type: string };
  };
  const bound = await exchange(await dpopProof(agentKey, { htu: w.tokenEndpoint }));
  expect(bound.token_type).toBe("DPoP");
  token = bound.access_token;
  unbound = (await exchange()).access_token;
  await newIntrospections();
}, 60_000);
afterAll(async () => {
  await w?.close();
});

describe("introspection with the resource server's DPoP proof", () => {
  it("the metadata says it is supported", async () => {
    const r = await httpsRaw(`${w.issuer}/.well-known/oauth-authorization-server`, { ca: w.bundlePem });
    expect((r.body as Record<string, unknown>).introspection_dpop_proof_supported).toBe(true);
  });

  it("a valid proof for this token, key and request: active, audited as checked", async () => {
    const r = await withProof(await rsProof());
    expect(r).toMatchObject({ active: true, token_type: "DPoP", cnf: { jkt: expect.any(String) }, act: { sub: AGENT } });
    expect(await newIntrospections()).toEqual([{ outcome: "success", code: null, details: expect.objectContaining({ active: true, dpop_proof: true }) }]);
  });

  it("without a proof, a bound token keeps today's answer (active, cnf, token_type DPoP)", async () => {
    expect((await introspect({ token })).body).toMatchObject({ active: true, token_type: "DPoP", cnf: { jkt: expect.any(String) } });
    expect((await newIntrospections())[0]!.details).toMatchObject({ active: true, dpop_proof: false });
  });

  it("a proof for another URL, another method, by another key, for another token (ath), or replayed: active:false, audited with the reason", async () => {
    const thief = await generateKeyPair("ES256", { extractable: true });
    const replayed = await rsProof();
    expect((await withProof(replayed)).active).toBe(true);
    await newIntrospections();
    const cases: Array<[string, string, string, RegExp]> = [
      ["another URL", await rsProof({ htu: `${API}/repos/acme/other` }), "dpop_proof_invalid", /another URL \(htu\)/],
      ["another method", await rsProof({ htm: "DELETE" }), "dpop_proof_invalid", /another HTTP method \(htm\)/],
      ["another key", await rsProof({}, thief), "dpop_proof_invalid", /another key than the token is bound to/],
      ["wrong ath", await rsProof({ ath: ath(unbound) }), "dpop_proof_invalid", /not for this access token \(ath\)/],
      ["replayed", replayed, "dpop_proof_replayed", /already used/],
    ];
    for (const [name, proof, code, reason] of cases) {
      expect(await withProof(proof), name).toEqual({ active: false });
      const records = await newIntrospections();
      expect(records, name).toHaveLength(1);
      expect(records[0], name).toMatchObject({ outcome: "refused", code, details: { active: false, dpop_proof: true } });
      expect(String(records[0]!.details.reason), name).toMatch(reason);
    }
    // The token itself is still active for a proof that is right.
    expect((await withProof(await rsProof())).active).toBe(true);
    await newIntrospections();
  });

  it("a proof beside an unbound (Bearer) token proves nothing: active:false", async () => {
    expect(await withProof(await rsProof({}, agentKey, unbound), {}, unbound)).toEqual({ active: false });
    expect(await newIntrospections()).toEqual([{ outcome: "refused", code: "dpop_proof_invalid", details: expect.objectContaining({ reason: expect.stringMatching(/not DPoP-bound/) }) }]);
  });

  it("a proof without the request's method or absolute URL is a malformed request (invalid_request), audited", async () => {
    for (const over of [{ dpop_method: undefined }, { dpop_url: undefined }, { dpop_url: "/repos/acme/widgets/issues" }]) {
      const r = await introspect({ token, dpop_proof: await rsProof(), dpop_method: "GET", dpop_url: RS_URL, ...over });
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ error: "invalid_request", code: "oauth_invalid_request" });
      expect((await newIntrospections()).map((x) => [x.outcome, x.code])).toEqual([["refused", "oauth_invalid_request"]]);
    }
  });
});
