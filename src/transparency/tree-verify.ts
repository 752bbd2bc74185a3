import type { AuditRepository, TransparencyRepository } from "../store/types.js";
import { auditLeafHash } from "./audit-leaf.js";
import { MemoryHashStore, treeHash } from "./merkle.js";

export type TreeVerification =
  | { ok: true; size: number; checkpointSize: number | null }
  | { ok: false; brokenAt: number; reason: "tree_mismatch" };

const PAGE = 1000;

/**
 * Recomputes the whole tree from the stored records (`hallmark audit verify` on the server's
 * host) and compares it with what the server stored and signed: each record's leaf with the
 * stored leaf hash, and the recomputed root at the last checkpoint's size with its signed root.
 * This catches what the hash chain cannot: a record rewritten together with every chain hash
 * after it. `brokenAt` is the seq of the first record whose leaf differs (or the checkpoint's
 * size when only the root does).
 */
export async function verifyAuditTree(audit: AuditRepository, tree: TransparencyRepository): Promise<TreeVerification> {
  const { integratedSize, checkpoint } = await tree.state();
  const memory = new MemoryHashStore();
  for (;;) {
    const records = await audit.list(memory.treeSize, PAGE);
    if (records.length === 0) break;
    const leaves = records.map(auditLeafHash);
    const stored = await tree.readHashes(records.filter((r) => r.seq <= integratedSize).map((r) => ({ level: 0, index: r.seq - 1 })));
    const differs = stored.findIndex((h, i) => !h || !h.equals(leaves[i]!));
    if (differs >= 0) return { ok: false, brokenAt: records[differs]!.seq, reason: "tree_mismatch" };
    await memory.appendLeafHashes(leaves);
    if (records.length < PAGE) break;
  }
  if (memory.treeSize < integratedSize) return { ok: false, brokenAt: memory.treeSize + 1, reason: "tree_mismatch" };
  if (checkpoint) {
    if (memory.treeSize < checkpoint.treeSize) return { ok: false, brokenAt: memory.treeSize + 1, reason: "tree_mismatch" };
    if (!(await treeHash(checkpoint.treeSize, memory)).equals(checkpoint.rootHash)) return { ok: false, brokenAt: checkpoint.treeSize, reason: "tree_mismatch" };
  }
  return { ok: true, size: memory.treeSize, checkpointSize: checkpoint?.treeSize ?? null };
}
