import { AUDIT_GENESIS_HASH, openSqliteStore } from "../store/sqlite.js";
import { type AuditCheckpoint, type AuditVerification, verifyAuditChain } from "./log.js";

/**
 * Verifies the audit chain of the database at `dbPath` through a read-only connection of its own:
 * beside the running server (WAL lets a reader run beside the writer) from a worker thread, or with
 * the server stopped, from the CLI (`hallmark audit verify --offline`).
 */
export async function verifyStoredAuditChain(dbPath: string, checkpoint?: AuditCheckpoint): Promise<AuditVerification> {
  const store = await openSqliteStore(dbPath, { readonly: true });
  try {
    return await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH, checkpoint);
  } finally {
    await store.close();
  }
}
