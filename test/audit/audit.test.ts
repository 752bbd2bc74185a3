import { afterAll, beforeAll, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { join } from "node:path";
import { AuditLog, verifyAuditChain } from "../../src/audit/log.js";
import { AUDIT_GENESIS_HASH, openSqliteStore } from "../../src/store/sqlite.js";
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

/** Tampering as an attacker with file access would: around the append-only triggers. */
function tamper(sql: string): void {
  const db = new Database(dbPath);
  db.exec("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;");
  db.exec(sql);
  db.exec(`CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
           CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;`);
  db.close();
}

describe("audit chain", () => {
  it("verifies an untouched chain", async () => {
    const v = await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH);
    expect(v).toMatchObject({ ok: true, records: 5 });
  });

  it("detects an edited record", async () => {
    tamper("UPDATE audit_log SET spiffe_id = 'spiffe://example.org/evil' WHERE seq = 3");
    expect(await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: false, brokenAt: 3, reason: "hash_mismatch" });
    tamper("UPDATE audit_log SET spiffe_id = 'spiffe://example.org/w2' WHERE seq = 3");
    expect(await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: true });
  });

  it("detects a deleted record", async () => {
    tamper("DELETE FROM audit_log WHERE seq = 2");
    expect(await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: false, brokenAt: 2, reason: "sequence_gap" });
  });
});
