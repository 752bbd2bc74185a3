import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tamperAuditLog } from "../helpers/audit-records.js";
import Database from "better-sqlite3";
import { join } from "node:path";
import { AuditLog, verifyAuditChain, verifyAuditTail } from "../../src/audit/log.js";
import { AUDIT_GENESIS_HASH, openSqliteStore } from "../../src/store/sqlite/index.js";
import type { Store } from "../../src/store/types.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("audit");
const dbPath = join(dir.path, "hallmark.db");
let store: Store;

beforeAll(async () => {
  store = await openSqliteStore(dbPath);
  const log = new AuditLog(store.audit);
  for (let i = 0; i < 5; i++) {
    await log.append({ time: new Date(1_700_000_000_000 + i), event: "issue_x509", outcome: "success", spiffeId: `spiffe://example.org/w${i}`, serial: `0${i}`, details: { policy: "p", n: i } });
  }
});
afterAll(async () => {
  await store.close();
  dir.remove();
});

describe("audit chain", () => {
  it("verifies an untouched chain", async () => {
    const v = await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH);
    expect(v).toMatchObject({ ok: true, records: 5 });
  });

  it("detects an edited record", async () => {
    tamperAuditLog(dbPath, "UPDATE audit_log SET spiffe_id = 'spiffe://example.org/evil' WHERE seq = 3");
    expect(await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: false, brokenAt: 3, reason: "hash_mismatch" });
    tamperAuditLog(dbPath, "UPDATE audit_log SET spiffe_id = 'spiffe://example.org/w2' WHERE seq = 3");
    expect(await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: true });
  });

  it("detects a deleted record", async () => {
    tamperAuditLog(dbPath, "DELETE FROM audit_log WHERE seq = 2");
    expect(await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: false, brokenAt: 2, reason: "sequence_gap" });
  });
});

describe("audit checkpoints: a cut-off tail", () => {
  const tailDir = tempDir("audit-tail");
  const tailDb = join(tailDir.path, "hallmark.db");
  let tailStore: Store;
  let log: AuditLog;
  const append = (i: number) => log.append({ time: new Date(1_700_000_000_000 + i), event: "issue_x509", outcome: "success", spiffeId: `spiffe://example.org/t${i}`, details: { n: i } });

  beforeAll(async () => {
    tailStore = await openSqliteStore(tailDb);
    log = new AuditLog(tailStore.audit);
    for (let i = 0; i < 6; i++) await append(i);
  });
  afterAll(async () => {
    await tailStore.close();
    tailDir.remove();
  });

  const cut = (sql: string) => {
    const db = new Database(tailDb);
    db.exec("DROP TRIGGER audit_log_no_delete;");
    db.exec(sql);
    db.exec("CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;");
    db.close();
  };

  it("a chain whose last records were deleted still verifies alone, and fails against the checkpoint taken before", async () => {
    const before = await verifyAuditChain(tailStore.audit, AUDIT_GENESIS_HASH);
    if (!before.ok) throw new Error("chain should verify");
    const checkpoint = { seq: before.records, hash: before.head };
    expect(await verifyAuditChain(tailStore.audit, AUDIT_GENESIS_HASH, checkpoint)).toMatchObject({ ok: true, records: 6 });
    cut("DELETE FROM audit_log WHERE seq >= 5");
    expect(await verifyAuditChain(tailStore.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: true, records: 4 });
    expect(await verifyAuditChain(tailStore.audit, AUDIT_GENESIS_HASH, checkpoint)).toMatchObject({ ok: false, brokenAt: 5, reason: "checkpoint_missing" });
  });

  it("a tail cut and appended again to the old length fails against the checkpoint too", async () => {
    // Now 4 records; the attacker appends two new ones, so the count matches a checkpoint at 6.
    const checkpointAt6 = { seq: 6, hash: "ab".repeat(32) };
    await append(100);
    await append(101);
    const v = await verifyAuditChain(tailStore.audit, AUDIT_GENESIS_HASH);
    expect(v).toMatchObject({ ok: true, records: 6 });
    expect(await verifyAuditChain(tailStore.audit, AUDIT_GENESIS_HASH, checkpointAt6)).toMatchObject({ ok: false, brokenAt: 6, reason: "checkpoint_mismatch" });
    if (v.ok) expect(await verifyAuditChain(tailStore.audit, AUDIT_GENESIS_HASH, { seq: 6, hash: v.head })).toMatchObject({ ok: true });
  });
});

describe("audit tail check (what the server runs at start)", () => {
  const tailDir = tempDir("audit-tailcheck");
  const tailDb = join(tailDir.path, "hallmark.db");
  let tailStore: Store;

  beforeAll(async () => {
    tailStore = await openSqliteStore(tailDb);
    const log = new AuditLog(tailStore.audit);
    for (let i = 0; i < 10; i++) await log.append({ time: new Date(1_700_000_000_000 + i), event: "issue_x509", outcome: "success", details: { n: i } });
  });
  afterAll(async () => {
    await tailStore.close();
    tailDir.remove();
  });

  const tamperTail = (sql: string) => {
    const db = new Database(tailDb);
    db.exec("DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete;");
    db.exec(sql);
    db.close();
  };

  it("checks only the last N records: an edit inside them is found, one before them is the full walk's business", async () => {
    expect(await verifyAuditTail(tailStore.audit, AUDIT_GENESIS_HASH, 4)).toMatchObject({ ok: true, records: 4 });
    expect(await verifyAuditTail(tailStore.audit, AUDIT_GENESIS_HASH, 100)).toMatchObject({ ok: true, records: 10 });
    tamperTail("UPDATE audit_log SET details = '{\"n\":99}' WHERE seq = 3");
    expect(await verifyAuditTail(tailStore.audit, AUDIT_GENESIS_HASH, 4)).toMatchObject({ ok: true, records: 4 });
    expect(await verifyAuditTail(tailStore.audit, AUDIT_GENESIS_HASH, 100)).toMatchObject({ ok: false, records: 2, brokenAt: 3, reason: "hash_mismatch" });
    tamperTail("UPDATE audit_log SET details = '{\"n\":2}' WHERE seq = 3");
    tamperTail("DELETE FROM audit_log WHERE seq = 8");
    expect(await verifyAuditTail(tailStore.audit, AUDIT_GENESIS_HASH, 4)).toMatchObject({ ok: false, records: 2, brokenAt: 8, reason: "sequence_gap" });
  });
});
