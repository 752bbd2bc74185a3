import { join } from "node:path";
import { exportJWK, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { SvidFiles } from "../../src/client/attest.js";
import { newClientKey } from "../../src/client/csr.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { NODE_PROOF_HEADER, NODE_SVID_HEADER } from "../../src/pki/channel-proof.js";
import { AUDIT_EVENTS } from "../../src/service/audit-events.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { AuditRecord } from "../../src/store/types.js";
import { type HttpsResult, httpsRaw, postJson } from "../helpers/https.js";
import { admitJoinTokenNode } from "../helpers/nodes.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/**
 * The limits of authenticated callers and of refused credentials, on the real server.
 *
 * The per-node issuance limit (limits.issuanceRate): a node's workloads may be issued `burst`
 * SVIDs at once and `perSecond` after, one token per SVID, a batch all or none; past it, 429
 * rate_limited with Retry-After before anything is judged, signed or written, and the refusals are
 * summarised in the audit log per node and window rather than written one by one.
 * Refused node credentials spend the caller's per-address allowance (limits.attestRate), and an
 * OAuth client each of its requests from its own (limits.clientRate), with the same summaries.
 * The server's clock is frozen and moved by hand, so the buckets refill only when the test says.
 */
const BURST = 66;
/** The per-address allowance (limits.attestRate) refused node credentials spend; the nodes' attestations from 127.0.0.1 take 4 of it. */
const ADDRESS_BURST = 10;
const CLIENT_BURST = 5;
const NODE_ID = "spiffe://example.org/node/limited";
const OTHER_NODE_ID = "spiffe://example.org/node/neighbour";
const WORKLOAD_ID = "spiffe://example.org/workload/limited";
const OTHER_WORKLOAD_ID = "spiffe://example.org/workload/neighbour";
let now = new Date();
let server: TestServer;
let node: SvidFiles;
let neighbour: SvidFiles;
/** A workload's X509-SVID: it chains to the bundle, but names no node. */
let workloadSvid: SvidFiles;

beforeAll(async () => {
  server = await startTestServer({
    clock: () => now,
    overrides: {
      // The helper's other limits stay; these are under test.
      limits: {
        issuanceRate: { perSecond: 1, burst: BURST, trackedNodes: 1000 },
        attestRate: { perSecond: 0.001, burst: ADDRESS_BURST, trackedAddresses: 1000 },
        clientRate: { perSecond: 0.001, burst: CLIENT_BURST, trackedClients: 1000 },
        rateLimitAuditInterval: 1,
      },
    },
  });
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  node = await admitJoinTokenNode(server, NODE_ID);
  neighbour = await admitJoinTokenNode(server, OTHER_NODE_ID);
  await admin("POST", "/admin/entries", { spiffe_id: WORKLOAD_ID, parent_id: NODE_ID, selectors: [] });
  await admin("POST", "/admin/entries", { spiffe_id: OTHER_WORKLOAD_ID, parent_id: OTHER_NODE_ID, selectors: [] });
  const key = await newClientKey();
  const issued = await post("/v1/svids/x509", { csr: key.csrPem, spiffe_id: OTHER_WORKLOAD_ID }, neighbour);
  expect(issued.status, issued.text).toBe(200);
  workloadSvid = { ...neighbour, certChainPem: (issued.body as { svid: { cert_chain_pem: string } }).svid.cert_chain_pem, privateKeyPem: key.privateKeyPem };
}, 60_000);

afterAll(async () => {
  await server?.destroy();
});

const as = (svid: SvidFiles) => ({ cert: svid.certChainPem, key: svid.privateKeyPem! });
const post = (path: string, body: unknown, who: SvidFiles = node) => postJson(`${server.url}${path}`, body, as(who));
const jwtBatch = (n: number, spiffeId = WORKLOAD_ID) =>
  post("/v1/svids/jwt/batch", { requests: Array.from({ length: n }, (_, i) => ({ audience: [`aud-${i}`], spiffe_id: spiffeId })) });

async function auditRecords(): Promise<AuditRecord[]> {
  const store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
  try {
    return await store.audit.list(0, 100_000);
  } finally {
    await store.close();
  }
}
const issuedTo = (records: AuditRecord[], actor: string) => records.filter((r) => r.actor === actor && r.outcome === "success").length;

function expectRateLimited(r: HttpsResult): void {
  expect(r.status, r.text).toBe(429);
  expect(r.contentType).toContain("application/problem+json");
  expect(r.body).toMatchObject({ code: "rate_limited", status: 429 });
  expect(Number(r.headers["retry-after"])).toBeGreaterThanOrEqual(1);
}

async function metricValue(route: string): Promise<number> {
  const text = (await httpsRaw(`${server.url}/metrics`, { method: "GET" })).text;
  const line = text.split("\n").find((l) => l.startsWith(`hallmark_rate_limited_total{route="${route}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("the per-node issuance limit", () => {
  let refusedRequests = 0;

  it("issues a node its burst, one token per SVID, a batch of 64 included", async () => {
    const batch = await jwtBatch(64);
    expect(batch.status, batch.text).toBe(200);
    const results = (batch.body as { results: Array<{ token?: string }> }).results;
    expect(results.filter((x) => typeof x.token === "string")).toHaveLength(64);
    for (let i = 0; i < BURST - 64; i++) {
      const r = await post("/v1/svids/jwt", { audience: [`single-${i}`], spiffe_id: WORKLOAD_ID });
      expect(r.status, r.text).toBe(200);
    }
  });

  it("past it, refuses every issuing route with 429 rate_limited and Retry-After, and issues nothing", async () => {
    const before = await auditRecords();
    const jwk = { ...(await exportJWK((await generateKeyPair("ES256", { extractable: true })).publicKey)), alg: "ES256" };
    const csr = (await newClientKey()).csrPem;
    const refusals = await Promise.all([
      post("/v1/svids/jwt", { audience: ["one-more"], spiffe_id: WORKLOAD_ID }),
      jwtBatch(1),
      post("/v1/svids/x509", { csr, spiffe_id: WORKLOAD_ID }),
      post("/v1/svids/x509/batch", { requests: [{ csr, spiffe_id: WORKLOAD_ID }] }),
      post("/v1/svids/wit", { public_key_jwk: jwk, spiffe_id: WORKLOAD_ID }),
    ]);
    refusals.forEach(expectRateLimited);
    refusedRequests += refusals.length;
    // Not one record yet: neither an issuance nor a refusal of its own (the summary comes later).
    const after = await auditRecords();
    expect(after.length).toBe(before.length);
    expect(await metricValue("/v1/svids/jwt")).toBe(1);
    expect(await metricValue("/v1/svids/jwt/batch")).toBe(1);
  });

  it("keeps each node's allowance its own, and does not count a node's own renewal", async () => {
    const r = await post("/v1/svids/jwt", { audience: ["neighbour"], spiffe_id: OTHER_WORKLOAD_ID }, neighbour);
    expect(r.status, r.text).toBe(200);
    const key = await newClientKey();
    const renewed = await post("/v1/node/renew", { csr: key.csrPem });
    expect(renewed.status, renewed.text).toBe(200);
    node = { ...node, certChainPem: (renewed.body as { svid: { cert_chain_pem: string } }).svid.cert_chain_pem, privateKeyPem: key.privateKeyPem };
  });

  it("audits the refusals as one rate_limited_summary record for the node", async () => {
    await vi.waitFor(
      async () => {
        const summaries = (await auditRecords()).filter((r) => r.event === AUDIT_EVENTS.rateLimitedSummary && r.actor === NODE_ID);
        expect(summaries).toHaveLength(1);
        expect(summaries[0]).toMatchObject({ outcome: "refused", code: "rate_limited" });
        expect(summaries[0]!.details).toMatchObject({
          count: refusedRequests,
          routes: { "/v1/svids/jwt": 1, "/v1/svids/jwt/batch": 1, "/v1/svids/x509": 1, "/v1/svids/x509/batch": 1, "/v1/svids/wit": 1 },
        });
      },
      { timeout: 10_000, interval: 200 },
    );
  });

  it("refills at perSecond: a refused batch takes nothing, and passes once the bucket holds it", async () => {
    now = new Date(now.getTime() + 10_000); // 10 tokens
    expectRateLimited(await jwtBatch(64));
    const before = issuedTo(await auditRecords(), NODE_ID);
    for (let i = 0; i < 10; i++) expect((await post("/v1/svids/jwt", { audience: [`refill-${i}`], spiffe_id: WORKLOAD_ID })).status).toBe(200);
    expectRateLimited(await post("/v1/svids/jwt", { audience: ["eleventh"], spiffe_id: WORKLOAD_ID }));
    now = new Date(now.getTime() + 64_000);
    expect((await jwtBatch(64)).status).toBe(200);
    expect(issuedTo(await auditRecords(), NODE_ID)).toBe(before + 10 + 64);
  });
});

describe("refused node credentials", () => {
  it("a workload's SVID on a node endpoint: refused and audited within the address's allowance, past it 429 and one summary", async () => {
    const from = "127.0.0.9";
    const refusalsOf = async () => (await auditRecords()).filter((r) => r.event === AUDIT_EVENTS.authenticateNode && r.actor === OTHER_WORKLOAD_ID);
    const before = (await refusalsOf()).length;
    const answers: HttpsResult[] = [];
    for (let i = 0; i < 30; i++) {
      answers.push(await postJson(`${server.url}/v1/svids/jwt`, { audience: ["x"] }, { ...as(workloadSvid), localAddress: from }));
    }
    const refused = answers.filter((r) => r.status === 401);
    expect(refused).toHaveLength(ADDRESS_BURST);
    answers.filter((r) => r.status !== 401).forEach(expectRateLimited);
    expect((await refusalsOf()).length).toBe(before + ADDRESS_BURST);
    await vi.waitFor(
      async () => {
        const summaries = (await auditRecords()).filter((r) => r.event === AUDIT_EVENTS.rateLimitedSummary && r.actor === `peer:${from}`);
        expect(summaries.reduce((n, r) => n + (r.details as { count: number }).count, 0)).toBe(30 - ADDRESS_BURST);
      },
      { timeout: 10_000, interval: 200 },
    );
  });

  it("an anonymous caller sending node proof headers that do not verify: the same allowance, then 429", async () => {
    const from = "127.0.0.10";
    const proofRefusals = async () => (await auditRecords()).filter((r) => r.event === AUDIT_EVENTS.authenticateNode && r.actor === `peer:${from}`);
    const answers: HttpsResult[] = [];
    for (let i = 0; i < 20; i++) {
      answers.push(
        await httpsRaw(`${server.url}/v1/svids/jwt`, {
          method: "POST",
          body: JSON.stringify({ audience: ["x"] }),
          headers: { "content-type": "application/json", [NODE_SVID_HEADER]: "garbage", [NODE_PROOF_HEADER]: "garbage" },
          localAddress: from,
        }),
      );
    }
    expect(answers.filter((r) => r.status === 401).map((r) => (r.body as { code: string }).code)).toEqual(Array(ADDRESS_BURST).fill("node_proof_svid_invalid"));
    answers.filter((r) => r.status !== 401).forEach(expectRateLimited);
    expect(await proofRefusals()).toHaveLength(ADDRESS_BURST);
  });
});

describe("the per-client limit of the token service", () => {
  it("answers an authenticated client's introspections within its allowance (each audited), then 429 in the OAuth format and one summary", async () => {
    const introspectionsBy = async () => (await auditRecords()).filter((r) => r.event === AUDIT_EVENTS.oauthIntrospect && r.actor === OTHER_WORKLOAD_ID).length;
    const before = await introspectionsBy();
    const answers: HttpsResult[] = [];
    for (let i = 0; i < CLIENT_BURST + 3; i++) {
      answers.push(
        await httpsRaw(`${server.url}/oauth2/introspect`, { method: "POST", body: "token=not-a-token", headers: { "content-type": "application/x-www-form-urlencoded" }, ...as(workloadSvid) }),
      );
    }
    expect(answers.slice(0, CLIENT_BURST).map((r) => [r.status, r.body])).toEqual(Array(CLIENT_BURST).fill([200, { active: false }]));
    for (const r of answers.slice(CLIENT_BURST)) {
      expect(r.status, r.text).toBe(429);
      expect(r.body).toMatchObject({ error: "temporarily_unavailable", code: "rate_limited" });
      expect(Number(r.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    }
    expect(await introspectionsBy()).toBe(before + CLIENT_BURST);
    await vi.waitFor(
      async () => {
        const summaries = (await auditRecords()).filter((r) => r.event === AUDIT_EVENTS.rateLimitedSummary && r.actor === OTHER_WORKLOAD_ID);
        expect(summaries.map((r) => r.details)).toMatchObject([{ count: 3, routes: { "/oauth2/introspect": 3 } }]);
      },
      { timeout: 10_000, interval: 200 },
    );
  });
});
