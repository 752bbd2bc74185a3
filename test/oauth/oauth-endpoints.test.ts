import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SignJWT, createRemoteJWKSet, customFetch, generateKeyPair, jwtVerify } from "jose";
import * as oauth from "oauth4webapi";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { NodeClient } from "../../src/client/node.js";
import { databasePath } from "../../src/config/server.js";
import type { AuthenticatedClient } from "../../src/oauth/client-auth.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { bundleFetch } from "../helpers/bundle-fetch.js";
import { httpsRaw } from "../helpers/https.js";
import { admitJoinTokenNode } from "../helpers/nodes.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { run } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

// The token service's endpoints on a real server (SoftHSM2, SQLite, mutual TLS). Tokens are
// issued through the service layer here; token exchange (phase 2) issues them the same way.

const TD = "spiffe://example.org";
const AGENT = `${TD}/agent/reviewer`;
const OTHER_AGENT = `${TD}/agent/other`;
const NODE_A = `${TD}/node/agents-a`;
const NODE_B = `${TD}/node/agents-b`;
/** Two delegations made through the admin API: tokens are issued under them, and one is deleted. */
const delegationIds: string[] = [];
let offsetMs = 0;

let server: TestServer;
let bundlePem: string;
let issuer: string;
const form = (fields: Record<string, string | string[]>) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) for (const one of [v].flat()) p.append(k, one);
  return p.toString();
};
interface Workload {
  certPem: string;
  keyPem: string;
  node: NodeClient;
  nodeId: string;
}
let agentA: Workload;
let otherA: Workload;
let agentB: Workload;

async function admin(method: string, path: string, body?: unknown) {
  return expectOk(await adminRequest(server.adminSocket, method, path, body));
}

async function workloadOn(nodeId: string, spiffeId: string): Promise<Workload> {
  const svid = await admitJoinTokenNode(server, nodeId);
  const node = new NodeClient(server.url, { certPem: svid.certChainPem, keyPem: svid.privateKeyPem!, trustBundlePem: bundlePem });
  await admin("POST", "/admin/entries", { parent_id: nodeId, spiffe_id: spiffeId, selectors: ["unix:uid:1000"] });
  const w = await node.fetchX509(spiffeId);
  return { certPem: w.certChainPem, keyPem: w.privateKeyPem, node, nodeId };
}

function post(path: string, body: string, opts: { as?: Workload; contentType?: string; cert?: { cert: string; key: string } } = {}) {
  const tls = opts.as ? { cert: opts.as.certPem, key: opts.as.keyPem } : (opts.cert ?? {});
  return httpsRaw(`${server.url}${path}`, {
    method: "POST",
    body,
    headers: { "content-type": opts.contentType ?? "application/x-www-form-urlencoded" },
    ca: bundlePem,
    ...tls,
  });
}

const clientOf = (w: Workload, clientId: string): AuthenticatedClient => ({ clientId, nodeId: w.nodeId, attestor: "join_token", method: "tls_client_auth" });

async function issue(over: Partial<Parameters<TestServer["oauth"]["tokens"]["issue"]>[0]> = {}) {
  const now = new Date(Date.now() + offsetMs);
  return server.oauth.tokens.issue({
    client: clientOf(agentA, AGENT),
    subject: "alice@example.com",
    subjectIssuer: "https://idp.example.com",
    audience: ["https://api.example"],
    scope: ["repo:read"],
    delegationId: delegationIds[0]!,
    expiresAt: new Date(now.getTime() + 300_000),
    now,
    ...over,
  });
}

const introspect = async (token: string, as: Workload = agentA) => {
  const r = await post("/oauth2/introspect", form({ token }), { as });
  expect(r.status).toBe(200);
  expect(r.headers["cache-control"]).toBe("no-store");
  return r.body as Record<string, unknown>;
};

beforeAll(async () => {
  server = await startTestServer({ clock: () => new Date(Date.now() + offsetMs) });
  bundlePem = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  for (let i = 0; i < 2; i++) {
    const d = (await admin("POST", "/admin/delegations", {
      actor: AGENT,
      subject_issuer: "https://idp.example.com",
      scopes: ["repo:read"],
      audiences: ["https://api.example"],
      max_ttl_seconds: 600,
    })) as { id: string };
    delegationIds.push(d.id);
  }
  issuer = server.url;
  agentA = await workloadOn(NODE_A, AGENT);
  otherA = { ...(await workloadOn(`${NODE_A}-2`, OTHER_AGENT)) };
  agentB = await workloadOn(NODE_B, `${TD}/agent/on-b`);
}, 60_000);
afterAll(async () => {
  for (const w of [agentA, otherA, agentB]) w?.node.close();
  await server?.destroy();
});

describe("discovery and keys", () => {
  it("oauth4webapi discovers the metadata (RFC 8414) with the bundle as its only trust anchor", async () => {
    const url = new URL(issuer);
    const response = await oauth.discoveryRequest(url, { algorithm: "oauth2", [oauth.customFetch]: bundleFetch(bundlePem) as never });
    const as = await oauth.processDiscoveryResponse(url, response);
    expect(as).toMatchObject({
      issuer,
      token_endpoint: `${issuer}/oauth2/token`,
      introspection_endpoint: `${issuer}/oauth2/introspect`,
      revocation_endpoint: `${issuer}/oauth2/revoke`,
      jwks_uri: `${issuer}/oauth2/jwks`,
      grant_types_supported: ["urn:ietf:params:oauth:grant-type:token-exchange"],
      response_types_supported: [],
      tls_client_certificate_bound_access_tokens: false,
    });
    expect(as.token_endpoint_auth_methods_supported).toEqual(expect.arrayContaining(["tls_client_auth", "spiffe_jwt"]));
    expect(as.dpop_signing_alg_values_supported).toContain("ES256");
    // RFC 8414 §3.1: no metadata under a path the issuer does not have.
    expect((await httpsRaw(`${issuer}/.well-known/oauth-authorization-server/tenant`, { ca: bundlePem })).status).toBe(404);
  });

  it("serves the token key at /oauth2/jwks and not in the SPIFFE bundle; an issued token verifies with jose against it", async () => {
    const jwks = (await httpsRaw(`${issuer}/oauth2/jwks`, { ca: bundlePem })).body as { keys: Array<{ kid: string; use: string; alg: string }> };
    expect(jwks.keys.length).toBe(1);
    expect(jwks.keys[0]).toMatchObject({ use: "sig", alg: "ES256" });
    const bundle = (await httpsRaw(`${issuer}/.well-known/spiffe-bundle`, { ca: bundlePem })).text;
    expect(bundle).not.toContain(jwks.keys[0]!.kid);
    const t = await issue({ priorAct: { sub: `${TD}/agent/planner`, iss: TD } });
    const remote = createRemoteJWKSet(new URL(`${issuer}/oauth2/jwks`), { [customFetch]: bundleFetch(bundlePem) as never });
    const { payload, protectedHeader } = await jwtVerify(t.token, remote, { typ: "at+jwt", issuer, audience: "https://api.example" });
    expect(protectedHeader.kid).toBe(jwks.keys[0]!.kid);
    expect(payload).toMatchObject({
      sub: "alice@example.com",
      client_id: AGENT,
      scope: "repo:read",
      act: { sub: AGENT, iss: TD, act: { sub: `${TD}/agent/planner`, iss: TD } },
      "urn:hallmark:attestation": { attestor: "join_token", node: NODE_A },
    });
  });
});

describe("introspection and revocation follow the lineage", () => {
  it("answers an active token with its claims, and token_type DPoP when it is bound", async () => {
    const t = await issue({ jkt: "j".repeat(43) });
    const r = await introspect(t.token);
    expect(r).toMatchObject({ active: true, sub: "alice@example.com", client_id: AGENT, scope: "repo:read", aud: "https://api.example", iss: issuer, jti: t.jti, token_type: "DPoP", cnf: { jkt: "j".repeat(43) }, act: { sub: AGENT, iss: TD } });
    expect((await introspect((await issue()).token)).token_type).toBe("Bearer");
  });

  it("revoking a parent makes its child and grandchild inactive at once; revoke is RFC 7009 (200 for unknown tokens)", async () => {
    const parent = await issue();
    const child = await issue({ parentJti: parent.jti, client: clientOf(otherA, OTHER_AGENT) });
    const grandchild = await issue({ parentJti: child.jti });
    expect((await introspect(grandchild.token)).active).toBe(true);
    // Another client may not revoke it (RFC 7009 §2.1)…
    const refused = await post("/oauth2/revoke", form({ token: parent.token }), { as: otherA });
    expect(refused.status, JSON.stringify(refused.body)).toBe(400);
    expect(refused.body).toMatchObject({ error: "unauthorized_client", code: "token_not_issued_to_client" });
    expect((await introspect(child.token)).active).toBe(true);
    // …the client it was issued to may.
    const ok = await post("/oauth2/revoke", form({ token: parent.token }), { as: agentA });
    expect(ok.status).toBe(200);
    for (const t of [parent, child, grandchild]) expect(await introspect(t.token)).toEqual({ active: false });
    expect((await post("/oauth2/revoke", form({ token: "not-a-token" }), { as: agentA })).status).toBe(200);
  });

  it("deleting a delegation makes every token of it, and every token derived from one, inactive", async () => {
    const parent = await issue({ delegationId: delegationIds[1]! });
    const child = await issue({ parentJti: parent.jti, delegationId: delegationIds[0]! });
    expect((await introspect(child.token)).active).toBe(true);
    await admin("DELETE", `/admin/delegations/${delegationIds[1]}`);
    expect(await introspect(parent.token)).toEqual({ active: false });
    expect(await introspect(child.token)).toEqual({ active: false });
  });

  it("expired, forged, re-signed, malformed and unknown tokens are inactive", async () => {
    const past = new Date(Date.now() - 120_000);
    const expired = await issue({ now: past, expiresAt: new Date(past.getTime() + 60_000) });
    expect(await introspect(expired.token)).toEqual({ active: false });
    const good = await issue();
    const [h, p, s] = good.token.split(".");
    const flipped = `${h}.${p}.${s!.startsWith("A") ? "B" : "A"}${s!.slice(1)}`;
    expect(await introspect(flipped)).toEqual({ active: false });
    // The same claims, signed by a key that is not ours under our kid.
    const { privateKey } = await generateKeyPair("ES256");
    const claims = JSON.parse(Buffer.from(p!, "base64url").toString()) as Record<string, unknown>;
    const header = JSON.parse(Buffer.from(h!, "base64url").toString()) as { kid: string };
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: "ES256", typ: "at+jwt", kid: header.kid }).sign(privateKey);
    expect(await introspect(forged)).toEqual({ active: false });
    const none = `${Buffer.from(JSON.stringify({ alg: "none", typ: "at+jwt" })).toString("base64url")}.${p}.`;
    expect(await introspect(none)).toEqual({ active: false });
    expect(await introspect("x".repeat(20_000).slice(0, 16_000))).toEqual({ active: false });
    expect((await introspect(good.token)).active).toBe(true);
  });

  it("evicting the actor's node makes its tokens and their descendants inactive, and its workloads can no longer authenticate", async () => {
    const onB = await issue({ client: clientOf(agentB, `${TD}/agent/on-b`) });
    const derived = await issue({ parentJti: onB.jti });
    expect((await introspect(derived.token)).active).toBe(true);
    await admin("POST", "/admin/nodes/evict", { spiffe_id: NODE_B });
    expect(await introspect(onB.token)).toEqual({ active: false });
    expect(await introspect(derived.token)).toEqual({ active: false });
    const r = await post("/oauth2/introspect", form({ token: derived.token }), { as: agentB });
    expect(r.status).toBe(401);
    expect(r.body).toMatchObject({ error: "invalid_client", code: "oauth_client_unauthenticated" });
    expect(r.headers["www-authenticate"]).toContain('error="invalid_client"');
  });
});

describe("client authentication", () => {
  const jwtSvid = async (audience: string[], w: Workload = agentA, spiffeId = AGENT) => (await w.node.fetchJwt(audience, spiffeId)).token;
  const withAssertion = (assertion: string, extra: Record<string, string> = {}) =>
    form({ token: "x", client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe", client_assertion: assertion, ...extra });

  it("accepts a JWT-SVID assertion for this server (issuer or endpoint), with or without a matching client_id", async () => {
    for (const aud of [[issuer], [`${issuer}/oauth2/introspect`]]) {
      const r = await post("/oauth2/introspect", withAssertion(await jwtSvid(aud)));
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    expect((await post("/oauth2/introspect", withAssertion(await jwtSvid([issuer]), { client_id: AGENT }))).status).toBe(200);
  });

  it("refuses assertions with a foreign aud, a second audience, another client_id, alg none, another trust domain's key, or expired", async () => {
    const refusals = [
      withAssertion(await jwtSvid(["https://elsewhere.example"])),
      withAssertion(await jwtSvid([issuer, "https://elsewhere.example"])),
      withAssertion(await jwtSvid([issuer]), { client_id: OTHER_AGENT }),
      withAssertion(`${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from(JSON.stringify({ sub: AGENT, aud: issuer, exp: 4e9 })).toString("base64url")}.`),
      withAssertion(
        await new SignJWT({ aud: issuer, jti: "j" })
          .setSubject("spiffe://other.example/agent")
          .setExpirationTime("5m")
          .setProtectedHeader({ alg: "ES256", kid: "k" })
          .sign((await generateKeyPair("ES256")).privateKey),
      ),
      form({ token: "x", client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", client_assertion: await jwtSvid([issuer]) }),
    ];
    const beforeExpiry = await jwtSvid([issuer]);
    for (const body of refusals) {
      const r = await post("/oauth2/introspect", body);
      expect(r.status, body.slice(0, 80)).toBe(401);
      expect(r.body).toMatchObject({ error: "invalid_client", code: "oauth_client_unauthenticated" });
    }
    offsetMs = 3600_000;
    try {
      expect((await post("/oauth2/introspect", withAssertion(beforeExpiry))).status).toBe(401);
    } finally {
      offsetMs = 0;
    }
  });

  it("accepts a workload X509-SVID over mutual TLS; refuses none, a node SVID, and a certificate the server did not issue", async () => {
    expect((await post("/oauth2/introspect", form({ token: "x" }), { as: agentA })).status).toBe(200);
    expect((await post("/oauth2/introspect", form({ token: "x", client_id: OTHER_AGENT }), { as: agentA })).status).toBe(401);
    expect((await post("/oauth2/introspect", form({ token: "x" }))).status).toBe(401);
    const nodeSvid = await admitJoinTokenNode(server, `${TD}/node/plain`);
    const asNode = await post("/oauth2/introspect", form({ token: "x" }), { cert: { cert: nodeSvid.certChainPem, key: nodeSvid.privateKeyPem! } });
    expect(asNode.status).toBe(401);
    expect((asNode.body as { error_description: string }).error_description).toContain("node SVID");
    // A self-signed certificate naming the agent: TLS does not verify it against the bundle.
    const dir = tempDir("foreign");
    try {
      const [key, cert] = [join(dir.path, "k.pem"), join(dir.path, "c.pem")];
      const made = await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=foreign", "-addext", `subjectAltName=URI:${AGENT}`]);
      expect(made.code).toBe(0);
      const r = await post("/oauth2/introspect", form({ token: "x" }), { cert: { cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") } });
      expect(r.status).toBe(401);
      expect(r.body).toMatchObject({ error: "invalid_client" });
    } finally {
      dir.remove();
    }
  });
});

describe("the OAuth wire format", () => {
  it("refuses a repeated parameter, a JSON body and a missing token in the OAuth error format, never cached", async () => {
    const dup = await post("/oauth2/introspect", "token=a&token=b", { as: agentA });
    expect(dup.status).toBe(400);
    expect(dup.body).toMatchObject({ error: "invalid_request", code: "invalid_request" });
    expect(dup.headers["cache-control"]).toBe("no-store");
    const json = await post("/oauth2/introspect", JSON.stringify({ token: "a" }), { as: agentA, contentType: "application/json" });
    expect(json.status).toBe(415);
    expect(json.body).toMatchObject({ error: "invalid_request", code: "unsupported_media_type" });
    const missing = await post("/oauth2/introspect", form({ token_type_hint: "access_token" }), { as: agentA });
    expect(missing.body).toMatchObject({ error: "invalid_request", code: "oauth_invalid_request" });
  });

  it("checks the token-exchange parameters (RFC 8693 §2.1) before anything else", async () => {
    const cases: Array<[Record<string, string | string[]>, string, string]> = [
      [{ grant_type: "client_credentials" }, "unsupported_grant_type", "oauth_unsupported_grant_type"],
      [{}, "invalid_request", "oauth_invalid_request"],
      [{ grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token: "t" }, "invalid_request", "oauth_invalid_request"],
      [{ grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token: "t", subject_token_type: "urn:x" }, "invalid_request", "oauth_unsupported_token_type"],
      [
        { grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token: "t", subject_token_type: "urn:ietf:params:oauth:token-type:jwt", actor_token: "a" },
        "invalid_request",
        "oauth_invalid_request",
      ],
      [
        { grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token: "t", subject_token_type: "urn:ietf:params:oauth:token-type:jwt", resource: ["https://a.example/x#frag"] },
        "invalid_target",
        "oauth_invalid_resource",
      ],
    ];
    for (const [fields, error, code] of cases) {
      const r = await post("/oauth2/token", form(fields), { as: agentA });
      expect(r.status, JSON.stringify(fields)).toBe(400);
      expect(r.body).toMatchObject({ error, code });
    }
  });

  it("audits introspections and refusals with a digest of the token, never the token", async () => {
    const t = await issue();
    await introspect(t.token);
    await post("/oauth2/introspect", form({ token: t.token }));
    const store = await openSqliteStore(databasePath(server.config), { readonly: true });
    try {
      const records = await store.audit.list(0, 100_000);
      const mine = records.filter((r) => r.event === "oauth_introspect" && r.serial === t.jti);
      expect(mine.map((r) => r.outcome)).toEqual(["success"]);
      expect(records.some((r) => r.event === "oauth_introspect" && r.outcome === "refused" && r.code === "oauth_client_unauthenticated")).toBe(true);
      expect(records.filter((r) => r.event === "issue_access_token").length).toBeGreaterThan(5);
      expect(JSON.stringify(records)).not.toContain(t.token.split(".")[2]);
    } finally {
      await store.close();
    }
  });
});
