import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditLog, type GroupCommitOptions, verifyAuditChain } from "../../src/audit/log.js";
import { HallmarkError } from "../../src/errors.js";
import { AUDIT_GENESIS_HASH, type AuditRecordInput, type AuditRepository, type Store } from "../../src/store/types.js";
import { engineFor, forEachEngine } from "../helpers/store-engines.js";
import { issuedSvidRecord } from "../helpers/audit-records.js";

/**
 * AuditLog's group commit (issue 10) on real SQLite and PostgreSQL: concurrent appends share
 * transactions yet come back in call order on one chain; a faulty record refuses only its own
 * caller; a failing store refuses every pending caller and writes nothing; close commits what
 * was accepted. Transactions are counted by a wrapper around the real repository.
 */
const t0 = new Date("2026-01-01T00:00:00Z");
const input = (i: number, serial?: string): AuditRecordInput => ({ time: t0, event: serial ? "issue_x509" : "refuse", outcome: serial ? "success" : "refused", serial, details: { i } });
const svid = (serial: string) => issuedSvidRecord(serial, t0);

/** The store's audit repository, recording the size of every appendBatch transaction it is asked for. */
function counting(repo: AuditRepository): { repo: AuditRepository; batches: number[] } {
  const batches: number[] = [];
  const appendBatch: AuditRepository["appendBatch"] = (items, hash) => {
    batches.push(items.length);
    return repo.appendBatch(items, hash);
  };
  return { repo: Object.create(repo, { appendBatch: { value: appendBatch } }) as AuditRepository, batches };
}

function logOn(store: Store, options: Partial<GroupCommitOptions> = {}) {
  const { repo, batches } = counting(store.audit);
  const commits: number[] = [];
  const log = new AuditLog(repo, { ...options, onCommit: (n) => commits.push(n) });
  let notified = 0;
  log.onAppend(() => notified++);
  return { log, batches, commits, notified: () => notified };
}

forEachEngine("audit group commit", (engine) => {
  let store: Store;
  beforeAll(async () => {
    store = await (await engine.newDatabase()).open();
  });
  afterAll(async () => {
    await store?.close();
  });

  it("200 concurrent appends: contiguous seqs in call order, one chain, fewer transactions than appends", async () => {
    const { log, batches, commits, notified } = logOn(store);
    const before = await store.audit.extent();
    const records = await Promise.all(Array.from({ length: 200 }, (_, i) => log.append(input(i, i % 2 ? `s${i}` : undefined), i % 2 ? svid(`s${i}`) : undefined)));
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: 200 }, (_, i) => before.lastSeq + 1 + i));
    expect(records.map((r) => r.details.i)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: true, records: before.count + 200 });
    expect(await store.svids.get("s199")).toEqual(svid("s199"));
    expect(batches.reduce((a, b) => a + b, 0)).toBe(200);
    expect(batches.length).toBeLessThan(200);
    expect(commits).toEqual(batches);
    // The integrator's wake: once per committed transaction, not once per record.
    expect(notified()).toBe(batches.length);
  });

  it("never puts more than maxBatch records in one transaction", async () => {
    const { log, batches } = logOn(store, { maxBatch: 8 });
    await Promise.all(Array.from({ length: 50 }, (_, i) => log.append(input(i))));
    expect(Math.max(...batches)).toBeLessThanOrEqual(8);
    expect(batches.reduce((a, b) => a + b, 0)).toBe(50);
  });

  it("with a window (maxDelayMs), appends made across turns of the event loop share a transaction", async () => {
    const { log, batches } = logOn(store, { maxDelayMs: 10 });
    const first = log.append(input(1));
    await new Promise((r) => setImmediate(r));
    const second = log.append(input(2));
    const [a, b] = await Promise.all([first, second]);
    expect(b.seq).toBe(a.seq + 1);
    expect(batches).toEqual([2]);
  });

  it("a serial recorded already refuses only its own caller: the others commit, in order", async () => {
    await store.svids.record(svid("taken"));
    const { log, batches } = logOn(store);
    const before = await store.audit.extent();
    const results = await Promise.allSettled(Array.from({ length: 16 }, (_, i) => (i === 6 ? log.append(input(i, "taken"), svid("taken")) : log.append(input(i, `d${i}`), svid(`d${i}`)))));
    expect(results.map((r) => r.status)).toEqual(Array.from({ length: 16 }, (_, i) => (i === 6 ? "rejected" : "fulfilled")));
    const seqs = results.flatMap((r) => (r.status === "fulfilled" ? [r.value.seq] : []));
    expect(seqs).toEqual(Array.from({ length: 15 }, (_, i) => before.lastSeq + 1 + i));
    // One batch that failed, then each record alone.
    expect(batches).toEqual([16, ...Array.from({ length: 16 }, () => 1)]);
    expect(await store.svids.get("d15")).toBeDefined();
    expect((await store.svids.get("taken"))?.spiffeId).toBe("spiffe://example.org/w");
    expect(await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: true, records: before.count + 15 });
  });

  it("close commits the appends still waiting for their window, then refuses new ones (unavailable)", async () => {
    const { log, batches } = logOn(store, { maxDelayMs: 10 });
    const before = await store.audit.extent();
    const pending = Array.from({ length: 5 }, (_, i) => log.append(input(i)));
    await log.close();
    expect((await Promise.all(pending)).map((r) => r.seq)).toEqual(Array.from({ length: 5 }, (_, i) => before.lastSeq + 1 + i));
    expect(batches).toEqual([5]);
    const refused = await log.append(input(9)).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(HallmarkError);
    expect(refused).toMatchObject({ code: "unavailable" });
    expect(await store.audit.extent()).toEqual({ count: before.count + 5, lastSeq: before.lastSeq + 5 });
  });
});

// SQLite only: another connection holding the file's write lock past busy_timeout is how a whole
// SQLite store fails here (as in test/store/sqlite-health.test.ts); PostgreSQL's failures are
// covered by test/store/postgres-server.test.ts.
describe("audit group commit when the whole store fails (SQLite: the write lock held elsewhere)", () => {
  it("every pending caller gets the store's error, nothing is written, and no record is tried alone", async () => {
    const db = await engineFor("sqlite").newDatabase();
    const store = await db.open();
    try {
      const { log, batches } = logOn(store);
      await log.append(input(0));
      const locker = new Database(db.location);
      let results: PromiseSettledResult<unknown>[];
      try {
        locker.exec("BEGIN EXCLUSIVE");
        results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => log.append(input(i + 1, `f${i}`), svid(`f${i}`))));
        locker.exec("ROLLBACK");
      } finally {
        locker.close();
      }
      expect(results.every((r) => r.status === "rejected" && (r.reason as HallmarkError).code === "store_unavailable")).toBe(true);
      expect(batches).toEqual([1, 20]);
      expect(await store.audit.extent()).toEqual({ count: 1, lastSeq: 1 });
      expect(await store.svids.get("f0")).toBeUndefined();
      // The store back: the next append continues the chain.
      expect((await log.append(input(99))).seq).toBe(2);
    } finally {
      await store.close();
    }
  }, 20_000);
});
