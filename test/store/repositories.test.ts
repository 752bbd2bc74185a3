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
    await store.audit.append({ time: t0, event: "test", outcome: "success", details: {} }, () => "f".repeat(64));
    await expect(rawSql(db, "DELETE FROM audit_log")).rejects.toThrow(/append-only/);
    await expect(rawSql(db, "UPDATE audit_log SET event = 'x'")).rejects.toThrow(/append-only/);
    expect((await store.audit.tail(10)).map((r) => r.event)).toEqual(["test"]);
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
    const hash = (seq: number) => seq.toString(16).padStart(64, "0");
    await writer.audit.append({ time: t0, event: "issue_x509", outcome: "success", details: {} }, (_prev, seq) => hash(seq));
    const ro = await openSqliteStore(roPath, { readonly: true });
    try {
      await writer.audit.append({ time: t0, event: "issue_x509", outcome: "success", details: {} }, (_prev, seq) => hash(seq));
      expect((await ro.audit.tail(10)).map((r) => r.seq)).toEqual([1, 2]);
      await expect(ro.audit.append({ time: t0, event: "x", outcome: "success", details: {} }, () => hash(9))).rejects.toMatchObject({ code: "store_unavailable", internal: expect.stringMatching(/^SQLITE_READONLY/) });
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
