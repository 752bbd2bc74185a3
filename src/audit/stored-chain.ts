import { type StoreSettings, openStore } from "../store/open.js";
import { AUDIT_GENESIS_HASH } from "../store/types.js";
import { verifyAuditTree } from "../transparency/tree-verify.js";
import { type AuditCheckpoint, type AuditVerification, verifyAuditChain } from "./log.js";

/**
 * Verifies the audit chain of the datastore through a read-only connection of its own: beside the
 * running server (SQLite's WAL lets a reader run beside the writer; PostgreSQL reads a snapshot
 * per statement) from a worker thread, or with
 * the server stopped, from the CLI (`hallmark audit verify --offline`). An intact chain is then
 * checked against the transparency log: the whole tree recomputed from the records must match the
 * stored leaves and the last signed checkpoint's root.
 */
export async function verifyStoredAuditChain(settings: StoreSettings, checkpoint?: AuditCheckpoint): Promise<AuditVerification> {
  const store = await openStore(settings, { readonly: true });
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
