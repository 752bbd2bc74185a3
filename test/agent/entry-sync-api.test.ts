import Database from "better-sqlite3";
import { createLocalJWKSet, jwtVerify } from "jose";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AUDIT_EVENTS } from "../../src/service/audit-events.js";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { type FetchedJwt, NodeClient, type NodeEntriesAnswer } from "../../src/client/node.js";
import { httpsRaw, postJson } from "../helpers/https.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/**
 * Issue 9, incremental entry sync: GET /v1/node/entries?since=REV answers only the creations and
 * deletions after REV that concern the calling node (its children, and aliases its selectors
 * match), never another node's; without `since`, or from a revision the log cannot continue from,
 * the full list.
 */
let server: TestServer;
let nodeA: NodeClient;
let nodeB: NodeClient;
const A = "spiffe://example.org/node/sync-a";
const B = "spiffe://example.org/node/sync-b";
const SERVER_ID = "spiffe://example.org/hallmark/server";

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
const entry = async (parent: string, spiffeId: string, selectors: string[], extra: Record<string, unknown> = {}) =>
  ((await admin("POST", "/admin/entries", { parent_id: parent, spiffe_id: spiffeId, selectors, ...extra })) as { id: string }).id;

async function attestNode(id: string): Promise<NodeClient> {
  const svid = await attestedSvid(id);
  return new NodeClient(server.url, { trustBundlePem: svid.bundlePem, certPem: svid.certChainPem, keyPem: svid.privateKeyPem! });
}

async function attestedSvid(id: string) {
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: id, ttl_seconds: 600 })) as { token: string };
  const bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  return attest({ server: server.url, tls: { trustBundlePem: bundle }, producer: joinTokenProducer(token) });
}

function changesOf(a: NodeEntriesAnswer) {
  if (a.full) throw new Error("expected an incremental answer");
  return a.changes.map((c) => (c.op === "created" ? `+${c.entry.spiffe_id}` : `-${c.id}`)).sort();
}

beforeAll(async () => {
  server = await startTestServer();
  nodeA = await attestNode(A);
  nodeB = await attestNode(B);
});
afterAll(async () => {
  nodeA?.close();
  nodeB?.close();
  await server?.destroy();
});

describe("GET /v1/node/entries", () => {
  it("answers a full list first, then exactly this node's changes since a revision", async () => {
    const before = await entry(A, "spiffe://example.org/sync/before", ["unix:uid:1001"], { hint: "before", dns_names: ["before.example.org"], x509_ttl_seconds: 120 });
    const full = await nodeA.entries();
    expect(full.full).toBe(true);
    if (!full.full) return;
    expect(full.entries).toEqual([
      { id: before, spiffe_id: "spiffe://example.org/sync/before", selectors: ["unix:uid:1001"], x509_ttl_seconds: 120, jwt_ttl_seconds: null, dns_names: ["before.example.org"], hint: "before", federates_with: [] },
    ]);
    expect(full.next_page).toBeUndefined();

    // Nothing changed: an empty incremental answer at the same revision.
    const idle = await nodeA.entries({ since: full.revision });
    expect(idle).toMatchObject({ full: false, revision: full.revision, more: false, changes: [] });

    const forA = await entry(A, "spiffe://example.org/sync/a1", ["unix:uid:1001"]);
    const forB = await entry(B, "spiffe://example.org/sync/b1", ["unix:uid:1001"]);
    await admin("DELETE", `/admin/entries/${before}`);
    await admin("DELETE", `/admin/entries/${forB}`);
    const shortLived = await entry(A, "spiffe://example.org/sync/gone", []);
    await admin("DELETE", `/admin/entries/${shortLived}`);

    const delta = await nodeA.entries({ since: full.revision });
    // A's creation, A's deletions; nothing of B's, and the created-then-deleted entry only as a deletion.
    expect(changesOf(delta)).toEqual([`+spiffe://example.org/sync/a1`, `-${before}`, `-${shortLived}`].sort());
    expect(delta.revision).toBeGreaterThan(full.revision);

    const deltaB = await nodeB.entries({ since: full.revision });
    expect(changesOf(deltaB)).toEqual([`-${forB}`]);
    expect(JSON.stringify(deltaB)).not.toContain(forA);

    // From the new revision: nothing more.
    expect(changesOf(await nodeA.entries({ since: delta.revision }))).toEqual([]);
  });

  it("sends an alias entry only to nodes whose selectors match, and its tombstone likewise", async () => {
    const start = await nodeA.entries();
    // Join-token nodes carry the selector join_token:<their SPIFFE ID> ... and no other: an alias on
    // a selector neither node has reaches neither.
    const nodes = (await admin("GET", "/admin/nodes")) as { nodes: Array<{ spiffe_id: string; selectors: string[] }> };
    const selectorsA = nodes.nodes.find((n) => n.spiffe_id === A)!.selectors;
    expect(selectorsA.length).toBeGreaterThan(0);
    const aliasA = await entry(SERVER_ID, "spiffe://example.org/sync/alias-a", selectorsA);
    const aliasNone = await entry(SERVER_ID, "spiffe://example.org/sync/alias-none", ["tpm:pcr:sha256:7:00"]);
    await admin("DELETE", `/admin/entries/${aliasA}`);
    await admin("DELETE", `/admin/entries/${aliasNone}`);
    const alias2 = await entry(SERVER_ID, "spiffe://example.org/sync/alias-a2", selectorsA);

    expect(changesOf(await nodeA.entries({ since: start.revision }))).toEqual(["+spiffe://example.org/sync/alias-a2", `-${aliasA}`].sort());
    expect(changesOf(await nodeB.entries({ since: start.revision }))).toEqual([]);
    const fullB = await nodeB.entries();
    expect(fullB.full && fullB.entries.map((e) => e.id)).not.toContain(alias2);
  });

  it("answers the full list when the revision is one the log cannot continue from", async () => {
    const head = await nodeA.entries();
    const ahead = await nodeA.entries({ since: head.revision + 1000 });
    expect(ahead.full).toBe(true);
    expect(ahead.revision).toBe(head.revision);
  });

  it("pages a large full list, children then the aliases the node matches, and the pages together are the whole list", async () => {
    const ids = new Set<string>();
    for (let i = 0; i < 520; i++) ids.add(await entry(B, `spiffe://example.org/sync/many/${i}`, ["unix:uid:2000"]));
    // Aliases come after the children, on the page where the children run out.
    const nodes = (await admin("GET", "/admin/nodes")) as { nodes: Array<{ spiffe_id: string; selectors: string[] }> };
    const selectorsB = nodes.nodes.find((n) => n.spiffe_id === B)!.selectors;
    for (let i = 0; i < 3; i++) ids.add(await entry(SERVER_ID, `spiffe://example.org/sync/alias-b/${i}`, selectorsB));
    const seen: string[] = [];
    let page = await nodeB.entries();
    let pages = 1;
    while (page.full && page.next_page) {
      seen.push(...page.entries.map((e) => e.id));
      page = await nodeB.entries({ pageAfter: page.next_page });
      pages++;
    }
    if (page.full) seen.push(...page.entries.map((e) => e.id));
    expect(pages).toBe(2);
    expect(new Set(seen).size).toBe(seen.length);
    for (const id of ids) expect(seen).toContain(id);
    // A page token that this server did not give is refused, not guessed at.
    await expect(nodeB.entries({ pageAfter: "not-a-token" })).rejects.toMatchObject({ code: "invalid_request" });
  });

  it("refuses a malformed revision with invalid_request", async () => {
    await expect(nodeA.entries({ since: -1 })).rejects.toMatchObject({ code: "invalid_request" });
  });
});

describe("POST /v1/svids/x509/batch", () => {
  it("issues each entitled request in its place and refuses the others one by one", async () => {
    await entry(A, "spiffe://example.org/batch/one", ["unix:uid:1"]);
    await entry(A, "spiffe://example.org/batch/two", ["unix:uid:2"]);
    await entry(B, "spiffe://example.org/batch/bs", ["unix:uid:3"]);
    const results = await nodeA.fetchX509Batch(["spiffe://example.org/batch/one", "spiffe://example.org/batch/bs", "spiffe://example.org/batch/two"]);
    expect(results.map((r) => (r instanceof Error ? (r as { code?: string }).code : r.spiffeId))).toEqual([
      "spiffe://example.org/batch/one",
      "not_entitled",
      "spiffe://example.org/batch/two",
    ]);
    // Each one audited on its own, as single requests are.
    const db = new Database(join(server.dataDir, "hallmark.db"), { readonly: true });
    try {
      const rows = db
        .prepare("SELECT outcome, code, spiffe_id AS id FROM audit_log WHERE event = ? AND spiffe_id LIKE 'spiffe://example.org/batch/%' ORDER BY seq")
        .all(AUDIT_EVENTS.issueX509);
      expect(rows).toEqual([
        { outcome: "success", code: null, id: "spiffe://example.org/batch/one" },
        { outcome: "refused", code: "not_entitled", id: "spiffe://example.org/batch/bs" },
        { outcome: "success", code: null, id: "spiffe://example.org/batch/two" },
      ]);
    } finally {
      db.close();
    }
  });

  it("refuses more than 64 requests as a malformed request", async () => {
    const ids = Array.from({ length: 65 }, (_, i) => `spiffe://example.org/batch/${i}`);
    await expect(nodeA.fetchX509Batch(ids)).rejects.toMatchObject({ code: "invalid_request" });
  });

  it("with wait: holds an answer with nothing for the node, past other nodes' changes, until one of its own commits", async () => {
    const { revision } = await nodeA.entries();
    const order: string[] = [];
    const poll = nodeA.entries({ since: revision, waitSeconds: 15 }).then((a) => {
      order.push("answered");
      return a;
    });

    await new Promise((r) => setTimeout(r, 300));
    // Another node's change wakes the poll, which finds nothing for A and keeps waiting.
    await entry(B, "spiffe://example.org/sync/long-poll-b", ["unix:uid:1"]);
    await new Promise((r) => setTimeout(r, 300));
    order.push("own change");
    await entry(A, "spiffe://example.org/sync/long-poll-a", ["unix:uid:1"]);
    const answer = await poll;
    expect(order).toEqual(["own change", "answered"]);
    expect(changesOf(answer)).toEqual(["+spiffe://example.org/sync/long-poll-a"]);
  });

  it("with wait: answers at the end of the wait with nothing and the latest revision, and refuses a wait over 20 s", async () => {
    const { revision } = await nodeA.entries();
    await entry(B, "spiffe://example.org/sync/quiet-b", ["unix:uid:2"]);
    const answer = await nodeA.entries({ since: revision, waitSeconds: 1 });
    expect(answer.full).toBe(false);
    expect(changesOf(answer)).toEqual([]);
    expect(answer.revision).toBeGreaterThan(revision);
    await expect(nodeA.entries({ since: revision, waitSeconds: 21 })).rejects.toMatchObject({ code: "invalid_request" });
  });
});

describe("POST /v1/svids/jwt/batch", () => {
  const ONE = "spiffe://example.org/jwt-batch/one";
  const TWO = "spiffe://example.org/jwt-batch/two";
  const OTHERS = "spiffe://example.org/jwt-batch/b";
  const jwks = async () => createLocalJWKSet((await httpsRaw(`${server.url}/.well-known/jwks.json`)).body as never);
  const auditRows = (where: string) => {
    const db = new Database(join(server.dataDir, "hallmark.db"), { readonly: true });
    try {
      return db.prepare(`SELECT outcome, code, spiffe_id AS id, serial FROM audit_log WHERE event = ? AND ${where}`).all(AUDIT_EVENTS.issueJwt) as Array<{ outcome: string; code: string | null; id: string }>;
    } finally {
      db.close();
    }
  };

  beforeAll(async () => {
    await entry(A, ONE, ["unix:uid:11"]);
    await entry(A, TWO, ["unix:uid:12"]);
    await entry(B, OTHERS, ["unix:uid:13"]);
  });

  it("issues each entitled request in its place, each token verifying for its own audience, and refuses the others one by one, each audited", async () => {
    const results = await nodeA.fetchJwtBatch([
      { spiffeId: ONE, audience: ["https://a.example.org"] },
      { spiffeId: OTHERS, audience: ["https://a.example.org"] },
      { spiffeId: TWO, audience: ["https://b.example.org", "https://c.example.org"] },
      { spiffeId: ONE, audience: ["bad\u202Eaudience"] },
      { spiffeId: ONE, audience: ["https://d.example.org"] },
    ]);
    expect(results.map((r) => (r instanceof Error ? (r as { code?: string }).code : r.spiffe_id))).toEqual([ONE, "not_entitled", TWO, "invalid_audience", ONE]);
    const keys = await jwks();
    const tokens = results.filter((r): r is FetchedJwt => !(r instanceof Error));
    const claims = await Promise.all(
      tokens.map(async (t, i) => (await jwtVerify(t.token, keys, { audience: ["https://a.example.org", "https://b.example.org", "https://d.example.org"][i]!, subject: t.spiffe_id })).payload),
    );
    expect(claims[1]!.aud).toEqual(["https://b.example.org", "https://c.example.org"]);
    // Distinct tokens with distinct records and leaves.
    expect(new Set(claims.map((c) => c.jti)).size).toBe(3);
    expect(new Set(tokens.map((t) => t.log_index)).size).toBe(3);
    // One audit record per token and per refusal, as single requests get (appended as each settles).
    const rows = auditRows("spiffe_id LIKE 'spiffe://example.org/jwt-batch/%'");
    expect(rows.map(({ outcome, code, id }) => `${outcome} ${code ?? "-"} ${id}`).sort()).toEqual(
      [`refused invalid_audience ${ONE}`, `refused not_entitled ${OTHERS}`, `success - ${ONE}`, `success - ${ONE}`, `success - ${TWO}`].sort(),
    );
    const db = new Database(join(server.dataDir, "hallmark.db"), { readonly: true });
    try {
      const recorded = db.prepare("SELECT serial FROM issued_svids WHERE kind = 'jwt' AND spiffe_id LIKE 'spiffe://example.org/jwt-batch/%'").all() as Array<{ serial: string }>;
      expect(recorded.map((r) => r.serial).sort()).toEqual(claims.map((c) => `jwt-${String(c.jti)}`).sort());
    } finally {
      db.close();
    }
  });

  it("shares audit transactions between the tokens of one batch (the batch-size histogram on /metrics)", async () => {
    const commits = async () => Number(/^hallmark_audit_commit_batch_size_count (\S+)$/m.exec((await httpsRaw(`${server.url}/metrics`)).text)?.[1]);
    const before = await commits();
    const results = await nodeA.fetchJwtBatch(Array.from({ length: 16 }, (_, i) => ({ spiffeId: ONE, audience: [`https://shared-${i}.example.org`] })));
    expect(results.filter((r) => r instanceof Error)).toEqual([]);
    const used = (await commits()) - before;
    expect(used).toBeGreaterThan(0);
    expect(used).toBeLessThan(16);
  });

  it("refuses a malformed batch whole: empty, over 64, an entry without a SPIFFE ID or with an empty audience", async () => {
    const c = await attestedSvid("spiffe://example.org/node/jwt-batch-c");
    const post = (body: unknown) => postJson(`${server.url}/v1/svids/jwt/batch`, body, { ca: c.bundlePem, cert: c.certChainPem, key: c.privateKeyPem! });
    for (const body of [
      { requests: [] },
      { requests: Array.from({ length: 65 }, () => ({ spiffe_id: ONE, audience: ["a"] })) },
      { requests: [{ audience: ["a"] }] },
      { requests: [{ spiffe_id: ONE, audience: [] }] },
      { requests: [{ spiffe_id: ONE, audience: ["a"], extra: 1 }] },
    ]) {
      const r = await post(body);
      expect(r.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(r.body).toMatchObject({ code: "invalid_request" });
    }
  });

  it("refuses a caller without a node SVID", async () => {
    const r = await postJson(`${server.url}/v1/svids/jwt/batch`, { requests: [{ spiffe_id: ONE, audience: ["a"] }] });
    expect(r.status).toBe(401);
    expect(r.body).toMatchObject({ code: "client_cert_required" });
  });
});
