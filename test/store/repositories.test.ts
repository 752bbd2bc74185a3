import { afterAll, beforeAll, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { join } from "node:path";
import pg from "pg";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { Store } from "../../src/store/types.js";
import { type TestDatabase, forEachEngine } from "../helpers/store-engines.js";
import { tempDir } from "../helpers/tmp.js";

/** The repositories' contract, on a real SQLite file and a real PostgreSQL database alike. */
const t0 = new Date("2026-01-01T00:00:00Z");
const later = (s: number) => new Date(t0.getTime() + s * 1000);

/** Runs raw SQL on the engine's database beside the store, as someone with direct access would. */
async function rawSql(db: TestDatabase, sql: string): Promise<void> {
  if (db.engine === "sqlite") {
    const raw = new Database(db.location);
    try {
      raw.prepare(sql).run();
    } finally {
      raw.close();
    }
    return;
  }
  const c = new pg.Client({ connectionString: db.location });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

forEachEngine("store", (engine) => {
  let db: TestDatabase;
  let store: Store;
  beforeAll(async () => {
    db = await engine.newDatabase();
    store = await db.open();
  });
  afterAll(async () => {
    await store.close();
  });

  it("with migrations off, refuses a database whose schema is behind (store_schema_behind), and opens it once migrated", async () => {
    const fresh = await engine.newDatabase();
    await expect(fresh.open({ migrate: false })).rejects.toMatchObject({ code: "store_schema_behind" });
    await (await fresh.open()).close();
    await (await fresh.open({ migrate: false })).close();
  });

  it("consumes a join token exactly once and refuses expired ones", async () => {
    await store.joinTokens.create({ tokenHash: "a".repeat(64), spiffeId: "spiffe://example.org/n1", expiresAt: later(60), createdAt: t0 });
    await store.joinTokens.create({ tokenHash: "b".repeat(64), spiffeId: "spiffe://example.org/n2", expiresAt: later(60), createdAt: t0 });
    expect((await store.joinTokens.consume("a".repeat(64), later(1))).outcome).toBe("consumed");
    expect((await store.joinTokens.consume("a".repeat(64), later(2))).outcome).toBe("used");
    expect((await store.joinTokens.consume("b".repeat(64), later(61))).outcome).toBe("expired");
    expect((await store.joinTokens.consume("c".repeat(64), later(1))).outcome).toBe("not_found");
  });

  it("moves a session through its states only once each, and never after expiry", async () => {
    const base = { attestorType: "tpm", nonce: Buffer.alloc(32, 1), status: "open" as const, createdAt: t0 };
    await store.sessions.create({ ...base, id: "s1", expiresAt: later(60) });
    await store.sessions.create({ ...base, id: "s2", expiresAt: later(60) });
    const spki = Buffer.from("spki");
    expect(await store.sessions.transition("s1", "open", "challenged", later(1), { state: { x: 1 }, boundSpki: spki })).toBe("consumed");
    expect(await store.sessions.transition("s1", "open", "challenged", later(1))).toBe("used");
    const s1 = await store.sessions.get("s1");
    expect(s1?.state).toEqual({ x: 1 });
    expect(s1?.boundSpki?.equals(spki)).toBe(true);
    expect(await store.sessions.transition("s1", "challenged", "done", later(2), { state: undefined })).toBe("consumed");
    expect((await store.sessions.get("s1"))?.state).toBeUndefined();
    expect(await store.sessions.transition("s2", "open", "done", later(60))).toBe("expired");
    expect(await store.sessions.transition("nope", "open", "done", later(1))).toBe("not_found");
  });

  it("refuses a duplicate registration entry and filters by parent", async () => {
    const e = { id: "e1", spiffeId: "spiffe://example.org/w", parentId: "spiffe://example.org/n1", selectors: ["k:v", "a:b"], dnsNames: [], admin: false, createdAt: t0 };
    await store.entries.create(e);
    await expect(store.entries.create({ ...e, id: "e2", selectors: ["a:b", "k:v"] })).rejects.toMatchObject({ code: "entry_exists" });
    expect((await store.entries.list({ parentId: "spiffe://example.org/n1" })).map((x) => x.id)).toEqual(["e1"]);
    expect(await store.entries.list({ parentId: "spiffe://example.org/other" })).toEqual([]);
    expect(await store.entries.delete("e1", new Date())).toBe(true);
    expect(await store.entries.get("e1")).toBeUndefined();
  });

  it("keeps nodes, CA keys and the bundle sequence across a reopen", async () => {
    await store.nodes.upsert({ spiffeId: "spiffe://example.org/n1", attestorType: "join_token", selectors: ["join_token:x"], canReattest: false, evicted: false, createdAt: t0, updatedAt: t0 });
    await store.caKeys.insert({ id: "k1", kind: "x509", label: "hallmark-x509-k1", keyType: "ec-p256", status: "active", certificate: Buffer.from([1, 2]), upstreamChain: [Buffer.from([3])], createdAt: t0 });
    const seq = await store.caKeys.bumpBundleSequence();
    await store.close();
    store = await db.open();
    expect((await store.nodes.get("spiffe://example.org/n1"))?.attestorType).toBe("join_token");
    const k = await store.caKeys.get("k1");
    expect(k?.certificate?.equals(Buffer.from([1, 2]))).toBe(true);
    expect(k?.upstreamChain?.[0]?.equals(Buffer.from([3]))).toBe(true);
    expect(await store.caKeys.bundleSequence()).toBe(seq);
    await store.caKeys.setStatus("k1", "retired", later(5));
    expect((await store.caKeys.get("k1"))?.retiredAt?.getTime()).toBe(later(5).getTime());
  });

  it("keeps pending CA keys out of list, completes them only while pending, and discards only pending ones", async () => {
    await store.caKeys.insert({ id: "p1", kind: "jwt", label: "hallmark-jwt-p1", keyType: "ec-p256", status: "pending", createdAt: later(10) });
    await store.caKeys.insert({ id: "p2", kind: "x509", label: "hallmark-x509-p2", keyType: "ec-p256", status: "pending", createdAt: later(11) });
    expect((await store.caKeys.list()).map((k) => k.id)).not.toContain("p1");
    expect((await store.caKeys.list("jwt")).map((k) => k.id)).not.toContain("p1");
    expect((await store.caKeys.listPending()).map((k) => k.id)).toEqual(["p1", "p2"]);

    await store.caKeys.markPrepared({ id: "p1", kind: "jwt", label: "hallmark-jwt-p1", keyType: "ec-p256", status: "prepared", kid: "kid-1", notAfter: later(99), createdAt: later(10) });
    expect(await store.caKeys.get("p1")).toMatchObject({ status: "prepared", kid: "kid-1", notAfter: later(99) });
    expect((await store.caKeys.list("jwt")).map((k) => k.id)).toContain("p1");
    // A record that is no longer pending is neither completed again nor discarded.
    await expect(store.caKeys.markPrepared({ id: "p1", kind: "jwt", label: "hallmark-jwt-p1", keyType: "ec-p256", status: "prepared", createdAt: later(10) })).rejects.toMatchObject({ code: "internal" });
    expect(await store.caKeys.discardPending("p1")).toBe(false);
    expect(await store.caKeys.get("p1")).toMatchObject({ status: "prepared", kid: "kid-1" });

    expect(await store.caKeys.discardPending("p2")).toBe(true);
    expect(await store.caKeys.get("p2")).toBeUndefined();
    expect(await store.caKeys.listPending()).toEqual([]);
  });

  it("refuses UPDATE and DELETE on the audit log at the database level", async () => {
    await store.audit.appendBatch([{ input: { time: t0, event: "test", outcome: "success", details: {} } }], () => "f".repeat(64));
    await expect(rawSql(db, "DELETE FROM audit_log")).rejects.toThrow(/append-only/);
    await expect(rawSql(db, "UPDATE audit_log SET event = 'x'")).rejects.toThrow(/append-only/);
    expect((await store.audit.tail(10)).map((r) => r.event)).toEqual(["test"]);
  });

  it("records nodes, evicts them forgetting the overlap SVID, and finds bans by SPIFFE ID or hardware", async () => {
    const n = { spiffeId: "spiffe://example.org/tpm/1", attestorType: "tpm", hardwareId: "ek-1", selectors: ["tpm:a", "tpm:b"], canReattest: true, serial: "01", expiresAt: later(60), previousSerial: "00", previousValidUntil: later(5), evicted: false, createdAt: t0, updatedAt: t0 };
    await store.nodes.upsert(n);
    expect(await store.nodes.get(n.spiffeId)).toEqual({ ...n, evictedAt: undefined });
    await store.nodes.upsert({ ...n, serial: "02", updatedAt: later(1) });
    expect((await store.nodes.get(n.spiffeId))?.serial).toBe("02");
    expect(await store.nodes.evict(n.spiffeId, later(2))).toBe(true);
    expect(await store.nodes.get(n.spiffeId)).toMatchObject({ evicted: true, evictedAt: later(2), previousSerial: undefined, previousValidUntil: undefined });
    expect(await store.nodes.evict("spiffe://example.org/none", later(2))).toBe(false);
    await store.nodes.ban({ spiffeId: n.spiffeId, attestorType: "tpm", hardwareId: "ek-1", createdAt: later(3) });
    expect((await store.nodes.findBan("spiffe://example.org/tpm/other", "tpm", "ek-1"))?.spiffeId).toBe(n.spiffeId);
    expect(await store.nodes.findBan("spiffe://example.org/tpm/other", "aws_nitro", "ek-1")).toBeUndefined();
    expect(await store.nodes.findBan("spiffe://example.org/tpm/other", "tpm", undefined)).toBeUndefined();
    expect((await store.nodes.listBans()).map((b) => b.spiffeId)).toEqual([n.spiffeId]);
    expect(await store.nodes.unban(n.spiffeId)).toBe(true);
    expect(await store.nodes.unban(n.spiffeId)).toBe(false);
    expect(await store.nodes.delete(n.spiffeId)).toBe(true);
    expect(await store.nodes.get(n.spiffeId)).toBeUndefined();
  });

  it("records SVIDs and tells the latest expiry per key and the count per kind", async () => {
    const svid = (serial: string, kind: "x509" | "jwt", notAfter: Date) => ({ serial, spiffeId: "spiffe://example.org/w", kind, nodeId: "spiffe://example.org/n1", caKeyId: "kx", issuedAt: t0, notAfter });
    await store.svids.record(svid("aa", "x509", later(100)));
    await store.svids.record(svid("bb", "x509", later(300)));
    await store.svids.record({ ...svid("jwt-cc", "jwt", later(200)), nodeId: undefined });
    expect(await store.svids.get("jwt-cc")).toEqual({ ...svid("jwt-cc", "jwt", later(200)), nodeId: undefined });
    expect(await store.svids.latestExpiry("kx")).toEqual(later(300));
    expect(await store.svids.latestExpiry("none")).toBeUndefined();
    expect(await store.svids.countByKind()).toEqual({ x509: 2, jwt: 1 });
  });

  it("walks an access token's lineage up and its descendants down, revokes once, and purges the expired", async () => {
    const tok = (jti: string, parentJti: string | undefined, expiresAt: Date) => ({ jti, parentJti, delegationId: "d", clientId: "spiffe://example.org/agent", actorNodeId: "spiffe://example.org/n1", subject: "alice", subjectIssuer: "https://idp", scope: "a b", audience: ["https://api"], jkt: undefined, keyId: "tk", issuedAt: t0, expiresAt, revokedAt: undefined });
    await store.accessTokens.record(tok("t1", undefined, later(300)));
    await store.accessTokens.record(tok("t2", "t1", later(200)));
    await store.accessTokens.record(tok("t3", "t2", later(100)));
    await store.accessTokens.record(tok("t4", "t1", later(100)));
    expect((await store.accessTokens.lineage("t3")).map((t) => t.jti)).toEqual(["t3", "t2", "t1"]);
    expect(await store.accessTokens.get("t3")).toEqual(tok("t3", "t2", later(100)));
    expect(await store.accessTokens.descendants("t1")).toEqual(["t2", "t3", "t4"]);
    expect(await store.accessTokens.revoke("t2", later(5))).toBe(true);
    expect(await store.accessTokens.revoke("t2", later(9))).toBe(true);
    expect((await store.accessTokens.get("t2"))?.revokedAt).toEqual(later(5));
    expect(await store.accessTokens.revoke("nope", later(5))).toBe(false);
    expect(await store.accessTokens.latestExpiry("tk")).toEqual(later(300));
    expect(await store.accessTokens.purgeExpired(later(150))).toBe(2);
    expect((await store.accessTokens.lineage("t2")).map((t) => t.jti)).toEqual(["t2", "t1"]);
  });

  it("keeps federation relationships: one per trust domain, refreshes recorded, due ones found", async () => {
    const f = { trustDomain: "partner.net", bundleEndpointUrl: "https://partner.net/bundle", profile: "https_web" as const, nextRefreshAt: later(10), createdAt: t0, updatedAt: t0 };
    await store.federations.create(f);
    await store.federations.create({ ...f, trustDomain: "b.example", nextRefreshAt: later(100) });
    await expect(store.federations.create(f)).rejects.toMatchObject({ code: "federation_exists" });
    await store.federations.recordRefresh("partner.net", { at: later(10), outcome: "ok", nextRefreshAt: later(70), bundle: { json: '{"keys":[]}', sequence: 3, refreshHintSeconds: 60 } });
    expect(await store.federations.get("partner.net")).toMatchObject({ bundle: '{"keys":[]}', bundleSequence: 3, refreshHintSeconds: 60, lastOutcome: "ok", lastRefreshAt: later(10), updatedAt: later(10) });
    await store.federations.recordRefresh("partner.net", { at: later(70), outcome: "bundle_invalid", error: "bad", nextRefreshAt: later(80) });
    expect(await store.federations.get("partner.net")).toMatchObject({ bundle: '{"keys":[]}', lastOutcome: "bundle_invalid", lastError: "bad", updatedAt: later(10) });
    expect((await store.federations.due(later(90))).map((x) => x.trustDomain)).toEqual(["partner.net"]);
    expect((await store.federations.list()).map((x) => x.trustDomain)).toEqual(["b.example", "partner.net"]);
    expect(await store.federations.update({ ...f, profile: "https_spiffe", endpointSpiffeId: "spiffe://partner.net/b", updatedAt: later(90) })).toBe(true);
    expect(await store.federations.get("partner.net")).toMatchObject({ profile: "https_spiffe", endpointSpiffeId: "spiffe://partner.net/b", bundle: undefined });
    expect(await store.federations.delete("b.example")).toBe(true);
    expect(await store.federations.update({ ...f, trustDomain: "b.example" })).toBe(false);
  });

  it("remembers a DPoP proof until it expires, then lets it be taken over, and purges", async () => {
    expect(await store.dpopProofs.remember("k1", later(10), later(0))).toBe(true);
    expect(await store.dpopProofs.remember("k1", later(20), later(5))).toBe(false);
    expect(await store.dpopProofs.remember("k1", later(30), later(10))).toBe(true);
    expect(await store.dpopProofs.remember("k2", later(5), later(0))).toBe(true);
    expect(await store.dpopProofs.purgeExpired(later(6))).toBe(1);
  });

  it("stores tree hashes and checkpoints only by compare-and-set", async () => {
    expect(await store.transparency.state()).toEqual({ integratedSize: 0, checkpoint: undefined });
    const h = (n: number) => Buffer.alloc(32, n);
    expect(await store.transparency.integrate(0, 2, [{ level: 0, index: 0, hash: h(1) }, { level: 0, index: 1, hash: h(2) }, { level: 1, index: 0, hash: h(3) }])).toBe(true);
    expect(await store.transparency.integrate(0, 3, [{ level: 0, index: 2, hash: h(4) }])).toBe(false);
    expect(await store.transparency.readHashes([{ level: 1, index: 0 }, { level: 0, index: 5 }, { level: 0, index: 1 }])).toEqual([h(3), undefined, h(2)]);
    const cp = { text: "cp\n", treeSize: 2, rootHash: h(3), signedAt: later(1) };
    expect(await store.transparency.saveCheckpoint(undefined, { ...cp, treeSize: 3 })).toBe(false);
    expect(await store.transparency.saveCheckpoint(1, cp)).toBe(false);
    expect(await store.transparency.saveCheckpoint(undefined, cp)).toBe(true);
    expect(await store.transparency.saveCheckpoint(undefined, cp)).toBe(false);
    expect(await store.transparency.state()).toEqual({ integratedSize: 2, checkpoint: cp });
  });

  it("lists audit records after a seq, the tail, and the extent", async () => {
    const before = (await store.audit.extent()).lastSeq;
    for (let i = 0; i < 3; i++) await store.audit.appendBatch([{ input: { time: later(i), event: "e", outcome: "refused", code: "c", actor: "a", spiffeId: "spiffe://example.org/x", attestor: "tpm", serial: `s${i}`, details: { n: i, nested: { z: 1, a: [1, 2] } } } }], (_i, _p, seq) => seq.toString(16).padStart(64, "0"));
    expect((await store.audit.list(before, 2)).map((r) => r.serial)).toEqual(["s0", "s1"]);
    const tail = await store.audit.tail(2);
    expect(tail.map((r) => r.seq)).toEqual([before + 2, before + 3]);
    expect(tail[1]).toMatchObject({ details: { n: 2, nested: { z: 1, a: [1, 2] } }, code: "c", attestor: "tpm", time: later(2) });
    expect(tail[1]!.prevHash).toBe(tail[0]!.hash);
    expect(await store.audit.extent()).toEqual({ count: before + 3, lastSeq: before + 3 });
  });
});

// SQLite-only: a read-only open of a WAL file beside its writer is SQLite's own mechanism (the
// PostgreSQL store's read-only mode is a session setting, tested with the audit worker).
describe("SQLite store opened read-only (WAL file semantics: SQLite only)", () => {
  const roDir = tempDir("store-ro");
  const roPath = join(roDir.path, "hallmark.db");
  afterAll(() => roDir.remove());

  it("reads what a writer beside it has not checkpointed yet, refuses every write, and never migrates", async () => {
    const writer = await openSqliteStore(roPath);
    const hash = (_input: unknown, _prev: string, seq: number) => seq.toString(16).padStart(64, "0");
    const issued = [{ input: { time: t0, event: "issue_x509", outcome: "success" as const, details: {} } }];
    await writer.audit.appendBatch(issued, hash);
    const ro = await openSqliteStore(roPath, { readonly: true });
    try {
      await writer.audit.appendBatch(issued, hash);
      expect((await ro.audit.tail(10)).map((r) => r.seq)).toEqual([1, 2]);
      await expect(ro.audit.appendBatch([{ input: { time: t0, event: "x", outcome: "success", details: {} } }], hash)).rejects.toMatchObject({ code: "store_unavailable", internal: expect.stringMatching(/^SQLITE_READONLY/) });
      await expect(ro.entries.delete("x", new Date())).rejects.toMatchObject({ code: "store_unavailable", internal: expect.stringMatching(/^SQLITE_READONLY/) });
    } finally {
      await ro.close();
      await writer.close();
    }
  });

  it("refuses a missing file instead of creating one, and a file that is no Hallmark database", async () => {
    await expect(openSqliteStore(join(roDir.path, "absent.db"), { readonly: true })).rejects.toMatchObject({ code: "unavailable" });
    const other = join(roDir.path, "other.db");
    const raw = new Database(other);
    raw.exec("CREATE TABLE t (a)");
    raw.close();
    await expect(openSqliteStore(other, { readonly: true })).rejects.toMatchObject({ code: "unavailable", message: /no such table: schema_version/ });
  });

  it("refuses a database migrated by a newer Hallmark, read-only and read-write alike", async () => {
    const db = new Database(roPath);
    db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(1000);
    db.close();
    await expect(openSqliteStore(roPath, { readonly: true })).rejects.toMatchObject({ code: "store_too_new" });
    await expect(openSqliteStore(roPath)).rejects.toMatchObject({ code: "store_too_new" });
  });
});
