import { randomUUID } from "node:crypto";
import { join } from "node:path";
import Database from "better-sqlite3";

/**
 * Adds `count` registration entries for `parentId` straight into a running server's SQLite file,
 * in one transaction, as the store's own create() writes them (the entry and its `created` change,
 * so agents' syncs see them). Bench-only: 100,000 entries over the admin API take minutes on a
 * busy 2-core machine, and what the bench measures is issuance beside them, not their creation.
 * The server reads entries from SQLite on every request, so it sees them at once.
 */
export function bulkInsertEntries(dataDir: string, parentId: string, count: number, prefix: string): void {
  const db = new Database(join(dataDir, "hallmark.db"));
  try {
    db.pragma("busy_timeout = 10000");
    const entry = db.prepare(
      `INSERT INTO entries (id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, dns_names, admin, hint, federates_with, created_at)
       VALUES (?, ?, ?, ?, NULL, NULL, '[]', 0, '', '[]', ?)`,
    );
    const change = db.prepare("INSERT INTO entry_changes (entry_id, kind, parent_id, selectors, changed_at) VALUES (?, 'created', ?, ?, ?)");
    const now = Date.now();
    db.transaction(() => {
      for (let n = 0; n < count; n++) {
        const id = randomUUID();
        const selectors = JSON.stringify([`bench:${prefix}${n}`]);
        entry.run(id, `spiffe://example.org/bench/${prefix}${n}`, parentId, selectors, now);
        change.run(id, parentId, selectors, now);
      }
    })();
  } finally {
    db.close();
  }
}
