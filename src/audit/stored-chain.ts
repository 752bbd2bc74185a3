import { AUDIT_GENESIS_HASH, openSqliteStore } from "../store/sqlite/index.js";
import { verifyAuditTree } from "../transparency/tree-verify.js";
import { type AuditCheckpoint, type AuditVerification, verifyAuditChain } from "./log.js";

/**
 * Verifies the audit chain of the database at `dbPath` through a read-only connection of its own:
 * beside the running server (WAL lets a reader run beside the writer) from a worker thread, or with
 * the server stopped, from the CLI (`hallmark audit verify --offline`). An intact chain is then
 * checked against the transparency log: the whole tree recomputed from the records must match the
 * stored leaves and the last signed checkpoint's root.
 */
export async function verifyStoredAuditChain(dbPath: string, checkpoint?: AuditCheckpoint): Promise<AuditVerification> {
  const store = await openSqliteStore(dbPath, { readonly: true });
  try {
    const chain = await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH, checkpoint);
    if (!chain.ok) return chain;
    const tree = await verifyAuditTree(store.audit, store.transparency);
    if (!tree.ok) return { ok: false, records: chain.records, brokenAt: tree.brokenAt, reason: tree.reason };
    return { ...chain, tree: { size: tree.size, checkpointSize: tree.checkpointSize } };
  } finally {
    await store.close();
  }
}
