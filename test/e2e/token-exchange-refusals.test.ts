import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SignJWT, exportSPKI, generateKeyPair } from "jose";
import type { AuditRecord } from "../../src/store/types.js";
import { signedToken } from "../helpers/test-idp.js";
import {
  type ExchangeWorld,
  IDP_ISSUER,
  PERSON,
  TD,
  TOKEN_TYPE,
  type Workload,
  auditRecords,
  dpopProof,
  personToken,
  postToken,
  startExchangeWorld,
} from "../helpers/token-exchange.js";

// Every refusal of POST /oauth2/token (issue 11, "Bad input"): each by its OAuth error and
// Hallmark code, and each leaving exactly one audit record that says who asked, for whom, what
// and why it was refused. DPoP is required by this server (the default).

const API = "https://api.github.example";
const AGENT = `${TD}/agent/code-reviewer`;
const OTHER = `${TD}/agent/other`;
const NO_DELEGATION = `${TD}/agent/nobody-trusts-me`;
const NEEDS_TPM = `${TD}/agent/needs-tpm`;

let w: ExchangeWorld;
let agent: Workload;
let other: Workload;
let undelegated: Workload;
let needsTpm: Workload;
let key: Awaited<ReturnType<typeof generateKeyPair>>;
let lastSeq = 0;

beforeAll(async () => {
  w = await startExchangeWorld({ dpop: { required: true, nonce: false } });
  agent = await w.workloadOn(`${TD}/node/agents-1`, AGENT);
  other = await w.workloadOn(`${TD}/node/agents-2`, OTHER);
  undelegated = await w.workloadOn(`${TD}/node/agents-3`, NO_DELEGATION);
  needsTpm = await w.workloadOn(`${TD}/node/agents-4`, NEEDS_TPM);
  await w.delegate({ actor: AGENT, scopes: ["repo:read", "issues:write"], audiences: [API], max_ttl_seconds: 300 });
  await w.delegate({ actor: NEEDS_TPM, scopes: ["repo:read"], audiences: [API], require_attestor: "tpm" });
  key = await generateKeyPair("ES256");
  lastSeq = (await auditRecords(w)).at(-1)?.seq ?? 0;
}, 60_000);
afterAll(async () => {
  await w?.close();
});

const proof = (claims: Partial<Parameters<typeof dpopProof>[1]> = {}) => dpopProof(key, { htu: w.tokenEndpoint, ...claims });
const now = () => Math.floor(Date.now() / 1000);

/** The audit records appended since the last call. */
async function newRecords(): Promise<AuditRecord[]> {
  const records = (await auditRecords(w)).filter((r) => r.seq > lastSeq);
  lastSeq = records.at(-1)?.seq ?? lastSeq;
  return records;
}

interface Case {
  name: string;
  as?: Workload | "none";
  fields?: Record<string, string | string[] | undefined>;
  /** Default: a fresh valid proof. */
  dpop?: string | null;
  status?: number;
  error: string;
  code: string;
}

/** Sends the case, checks the answer, and checks that exactly one refusal record with its code was appended. */
async function refused(c: Case): Promise<AuditRecord> {
  const fields = { subject_token: await personToken(w), subject_token_type: TOKEN_TYPE.jwt, audience: API, ...c.fields };
  const dpop = c.dpop === null ? undefined : (c.dpop ?? (await proof()));
  const as = c.as === "none" ? undefined : (c.as ?? agent);
  const r = await postToken(w, as, fields, dpop);
  expect(r.status, c.name).toBe(c.status ?? 400);
  expect(r.body, c.name).toMatchObject({ error: c.error, code: c.code });
  expect(r.headers["cache-control"], c.name).toBe("no-store");
  const records = await newRecords();
  expect(
    records.map((x) => [x.event, x.outcome, x.code]),
    c.name,
  ).toEqual([["issue_access_token", "refused", c.code]]);
  const rec = records[0]!;
  expect(rec.actor, c.name).toBe(as ? as.spiffeId : "unauthenticated");
  expect(typeof rec.details.reason, c.name).toBe("string");
  if (typeof fields.subject_token === "string") expect(JSON.stringify(rec), c.name).not.toContain(fields.subject_token.split(".")[2] || fields.subject_token.slice(-40));
  return rec;
}

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");

describe("subject tokens that do not verify", () => {
  it("expired, not yet valid, for another audience, from an unconfigured issuer", async () => {
    await refused({ name: "expired", fields: { subject_token: await personToken(w, { iat: now() - 700, exp: now() - 60 }) }, error: "invalid_grant", code: "subject_token_expired" });
    await refused({ name: "not yet valid", fields: { subject_token: await personToken(w, { nbf: now() + 300 }) }, error: "invalid_grant", code: "subject_token_expired" });
    await refused({ name: "wrong audience", fields: { subject_token: await personToken(w, { aud: "https://someone-else.example" }) }, error: "invalid_grant", code: "subject_token_audience" });
    const rec = await refused({ name: "wrong issuer", fields: { subject_token: await personToken(w, { iss: "https://evil.example" }) }, error: "invalid_grant", code: "subject_token_issuer_untrusted" });
    expect(rec.details.internal).toContain("https://evil.example");
  });

  it("alg none, HMAC keyed with the IdP's public key, oversized, another key under the IdP's kid", async () => {
    const claims = { iss: IDP_ISSUER, sub: PERSON, aud: w.server.config.delegation.subjectIssuers[0]!.audiences[0], exp: now() + 600, iat: now() };
    await refused({ name: "alg none", fields: { subject_token: `${b64({ alg: "none", kid: w.idp.key.kid })}.${b64(claims)}.` }, error: "invalid_grant", code: "subject_token_invalid" });
    const spki = await exportSPKI(w.idp.key.publicKey);
    const hs = await new SignJWT(claims).setProtectedHeader({ alg: "HS256", kid: w.idp.key.kid }).sign(new TextEncoder().encode(spki));
    await refused({ name: "HS256 with the public key", fields: { subject_token: hs }, error: "invalid_grant", code: "subject_token_invalid" });
    await refused({ name: "oversized", fields: { subject_token: await personToken(w, { pad: "x".repeat(20_000) }) }, error: "invalid_grant", code: "subject_token_invalid" });
    const impostor = { ...(await generateKeyPair("ES256")), kid: w.idp.key.kid, jwk: w.idp.key.jwk };
    await refused({ name: "another key", fields: { subject_token: await signedToken(impostor, claims) }, error: "invalid_grant", code: "subject_token_invalid" });
  });

  it("a deeply nested act is refused, whether the token itself is too deep or the exchange would make it so", async () => {
    const nest = (n: number): Record<string, unknown> => (n === 1 ? { sub: `${TD}/agent/a1` } : { sub: `${TD}/agent/a${n}`, act: nest(n - 1) });
    await refused({ name: "act 50 deep", fields: { subject_token: await personToken(w, { act: nest(50) }) }, error: "invalid_grant", code: "act_too_deep" });
    await refused({ name: "act 4 deep (maxActDepth 4)", fields: { subject_token: await personToken(w, { act: nest(4) }) }, error: "invalid_grant", code: "act_too_deep" });
  });

  it("unknown token types", async () => {
    await refused({ name: "subject type", fields: { subject_token_type: "urn:ietf:params:oauth:token-type:saml2" }, error: "invalid_request", code: "oauth_unsupported_token_type" });
    await refused({ name: "actor type", fields: { actor_token: "a.b.c", actor_token_type: "urn:ietf:params:oauth:token-type:saml2" }, error: "invalid_request", code: "oauth_unsupported_token_type" });
    await refused({ name: "grant type", fields: { grant_type: "client_credentials" }, error: "unsupported_grant_type", code: "oauth_unsupported_grant_type" });
  });
});

describe("actors and clients", () => {
  it("refuses an unauthenticated client, an actor token of another agent, and an actor token that is not a JWT-SVID", async () => {
    const rec = await refused({ name: "no client certificate", as: "none", status: 401, error: "invalid_client", code: "oauth_client_unauthenticated" });
    expect(rec.spiffeId).toBeUndefined();
    const others = (await other.node.fetchJwt([w.issuer], OTHER)).token;
    const forElsewhere = (await agent.node.fetchJwt(["https://elsewhere.example"], AGENT)).token;
    await newRecords(); // the two JWT-SVIDs' issuance records
    const rec2 = await refused({ name: "actor is not the client", fields: { actor_token: others, actor_token_type: TOKEN_TYPE.jwt }, error: "invalid_grant", code: "actor_not_client" });
    expect(rec2.details).toMatchObject({ subject: PERSON, subject_issuer: IDP_ISSUER });
    await refused({ name: "actor token from the IdP", fields: { actor_token: await personToken(w, { sub: AGENT }), actor_token_type: TOKEN_TYPE.jwt }, error: "invalid_grant", code: "actor_token_invalid" });
    await refused({ name: "JWT-SVID for another audience", fields: { actor_token: forElsewhere, actor_token_type: TOKEN_TYPE.jwt }, error: "invalid_grant", code: "actor_token_invalid" });
  });

  it("refuses an agent no delegation names, one whose node is not attested as required, one may_act does not name", async () => {
    const rec = await refused({ name: "no delegation", as: undelegated, error: "unauthorized_client", code: "delegation_denied" });
    expect(rec.details.internal).toContain(NO_DELEGATION);
    const rec2 = await refused({ name: "attestor", as: needsTpm, error: "unauthorized_client", code: "delegation_attestation_insufficient" });
    expect(String(rec2.details.internal)).toContain("tpm");
    await refused({ name: "may_act", fields: { subject_token: await personToken(w, { may_act: { sub: OTHER } }) }, error: "invalid_grant", code: "may_act_refused" });
  });
});

describe("asking for more than allowed", () => {
  it("scope, lifetime and audience beyond the delegation or the subject token", async () => {
    const rec = await refused({ name: "scope escalation", fields: { scope: "repo:read admin" }, error: "invalid_scope", code: "scope_not_allowed" });
    expect(rec.details).toMatchObject({ requested: { scope: "repo:read admin", audience: [API] } });
    // The delegation allows issues:write, the person's token does not hold it.
    await refused({ name: "beyond the subject token's scope", fields: { subject_token: await personToken(w, { scope: "repo:read" }), scope: "issues:write" }, error: "invalid_scope", code: "scope_not_allowed" });
    const rec2 = await refused({ name: "TTL escalation", fields: { expires_in: "3600" }, error: "invalid_request", code: "ttl_not_allowed" });
    expect(rec2.details).toMatchObject({ requested: { expires_in: 3600 } });
    await refused({ name: "TTL not a number", fields: { expires_in: "5m" }, error: "invalid_request", code: "oauth_invalid_request" });
    await refused({ name: "audience", fields: { audience: "https://evil.example" }, error: "invalid_target", code: "audience_not_allowed" });
    await refused({ name: "resource", fields: { audience: undefined, resource: "https://evil.example/api" }, error: "invalid_target", code: "audience_not_allowed" });
  });

  it("grants a shorter lifetime when asked, never past the subject token's exp", async () => {
    const r = await postToken(w, agent, { subject_token: await personToken(w), subject_token_type: TOKEN_TYPE.jwt, audience: API, expires_in: "60" }, await proof());
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect((r.body as { expires_in: number }).expires_in).toBeLessThanOrEqual(60);
    const soon = await postToken(w, agent, { subject_token: await personToken(w, { exp: now() + 30 }), subject_token_type: TOKEN_TYPE.jwt, audience: API }, await proof());
    expect((soon.body as { expires_in: number }).expires_in).toBeLessThanOrEqual(30);
    expect((await newRecords()).map((x) => [x.event, x.outcome])).toEqual([
      ["issue_access_token", "success"],
      ["issue_access_token", "success"],
    ]);
  });
});

describe("DPoP proofs", () => {
  it("refuses a missing proof (required), a replayed one, one for another URL or method, an old one", async () => {
    await refused({ name: "missing", dpop: null, error: "invalid_dpop_proof", code: "dpop_required" });
    const once = await proof();
    const first = await postToken(w, agent, { subject_token: await personToken(w), subject_token_type: TOKEN_TYPE.jwt, audience: API }, once);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toMatchObject({ token_type: "DPoP" });
    await newRecords();
    await refused({ name: "replayed", dpop: once, error: "invalid_dpop_proof", code: "dpop_proof_replayed" });
    await refused({ name: "another URL", dpop: await proof({ htu: "https://elsewhere.example/oauth2/token" }), error: "invalid_dpop_proof", code: "dpop_proof_invalid" });
    await refused({ name: "another method", dpop: await proof({ htm: "GET" }), error: "invalid_dpop_proof", code: "dpop_proof_invalid" });
    await refused({ name: "too old", dpop: await proof({ iat: now() - 600 }), error: "invalid_dpop_proof", code: "dpop_proof_invalid" });
    await refused({ name: "two proofs", dpop: `${await proof()}, ${await proof()}`, error: "invalid_dpop_proof", code: "dpop_proof_invalid" });
  });

  it("a DPoP-bound person's token (cnf.jkt) is exchanged only with a proof by its key", async () => {
    const bound = await personToken(w, { cnf: { jkt: "A".repeat(43) } });
    await refused({ name: "proof by another key", fields: { subject_token: bound }, error: "invalid_dpop_proof", code: "dpop_proof_invalid" });
  });
});
