import Database from "better-sqlite3";
import { auditRecordHash } from "../../src/audit/log.js";
import { AUDIT_GENESIS_HASH } from "../../src/store/sqlite/index.js";
import type { AuditRecordInput, IssuedSvidRecord } from "../../src/store/types.js";

/**
 * Appends `count` chained audit records to the database at `dbPath` (already migrated), hashed by
 * the production auditRecordHash, in transactions of 10,000. The server's group commit takes at
 * most audit.groupCommit.maxBatch records per transaction and a turn of the event loop to gather
 * them; only that is skipped.
 */
export function appendAuditRecordsInBulk(dbPath: string, count: number): void {
  const db = new Database(dbPath);
  try {
    const last = db.prepare("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").get() as { seq: number; hash: string } | undefined;
    let seq = last?.seq ?? 0;
    let prevHash = last?.hash ?? AUDIT_GENESIS_HASH;
    const insert = db.prepare(
      `INSERT INTO audit_log (seq, time, event, outcome, code, actor, spiffe_id, attestor, serial, details, prev_hash, hash)
       VALUES (?, ?, ?, ?, NULL, ?, ?, NULL, ?, ?, ?, ?)`,
    );
    const batch = db.transaction((n: number) => {
      for (let i = 0; i < n; i++) {
        seq += 1;
        const r: AuditRecordInput = {
          time: new Date(1_700_000_000_000 + seq),
          event: "issue_x509",
          outcome: "success",
          actor: "spiffe://example.org/node",
          spiffeId: `spiffe://example.org/w${seq % 100}`,
          serial: seq.toString(16),
          details: { policy: "default", n: seq },
        };
        const hash = auditRecordHash({ ...r, seq, prevHash });
        insert.run(seq, r.time.getTime(), r.event, r.outcome, r.actor, r.spiffeId, r.serial, JSON.stringify(r.details), prevHash, hash);
        prevHash = hash;
      }
    });
    for (let done = 0; done < count; done += 10_000) batch(Math.min(10_000, count - done));
  } finally {
    db.close();
  }
}

/** How many audit records the database holds, counted with SQL beside the code under test. */
export function auditRecordCount(dbPath: string): number {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    return Number((db.prepare("SELECT COUNT(*) AS n FROM audit_log").get() as { n: number }).n);
  } finally {
    db.close();
  }
}

/** Edits the log as an attacker with file access would: around the append-only triggers. */
export function tamperAuditLog(dbPath: string, sql: string): void {
  const db = new Database(dbPath);
  try {
    db.exec("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;");
    db.exec(sql);
    db.exec(`CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
             CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;`);
  } finally {
    db.close();
  }
}

/** An issued X.509-SVID's record as an issuance writes it beside its audit record, valid for an hour from `issuedAt`. */
export function issuedSvidRecord(serial: string, issuedAt: Date, nodeId?: string): IssuedSvidRecord {
  return {
    serial,
    spiffeId: "spiffe://example.org/w",
    kind: "x509",
    ...(nodeId !== undefined ? { nodeId } : {}),
    caKeyId: "k1",
    issuedAt,
    notAfter: new Date(issuedAt.getTime() + 3600_000),
  };
}
