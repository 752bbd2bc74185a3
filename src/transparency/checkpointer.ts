import type { Clock } from "../service/clock.js";
import type { AuditRepository, TlogSignedCheckpoint, TransparencyRepository } from "../store/types.js";
import { checkedAuditLeafHash } from "./audit-leaf.js";
import { openCheckpoint, signCheckpoint } from "./checkpoint.js";
import { isHallmarkError } from "../errors.js";
import { tlogError } from "./errors.js";
import type { LogKey } from "./log-key.js";
import { consistencyProof, treeHash, verifyConsistency } from "./merkle.js";
import { StoredHashReader } from "./stored-hashes.js";

export interface CheckpointerDeps {
  tree: TransparencyRepository;
  audit: AuditRepository;
  key: LogKey;
  origin: string;
  clock: Clock;
}

/**
 * Signs a checkpoint of the integrated tree when it grew since the last one (or when none was
 * ever signed: the empty tree's, so /log/checkpoint always answers). Never signs a tree that is
 * not consistent with the last signed checkpoint: a consistency proof from the stored hashes is
 * checked against the last checkpoint's own root before the HSM is asked. Returns the new
 * checkpoint, or undefined when there was nothing to sign or another replica signed first.
 */
export async function signNextCheckpoint(d: CheckpointerDeps): Promise<TlogSignedCheckpoint | undefined> {
  const { integratedSize: size, checkpoint: last } = await d.tree.state();
  if (last && last.treeSize >= size) return undefined;
  const reader = new StoredHashReader(d.tree);
  const root = await treeHash(size, reader);
  if (last) {
    try {
      verifyConsistency(last.treeSize, size, last.rootHash, root, await consistencyProof(last.treeSize, size, reader));
    } catch (e) {
      throw tlogError("tlog_tree_diverged", `the tree of size ${size} is not consistent with the checkpoint of size ${last.treeSize}: not signed`, { cause: e });
    }
  }
  const text = await signCheckpoint({ origin: d.origin, treeSize: size, rootHash: root, extensions: [] }, d.key.signer);
  const cp: TlogSignedCheckpoint = { text, treeSize: size, rootHash: root, signedAt: d.clock() };
  return (await d.tree.saveCheckpoint(last?.treeSize, cp)) ? cp : undefined;
}

/**
 * The start-up check: the stored records and tree must extend the last signed checkpoint, or the
 * server refuses to start (tlog_tree_diverged), since it could only sign a forked history.
 * - no record is missing (count = last seq) and none past the integrated size was cut off;
 * - the last checkpoint verifies with the log key and states the stored size and root;
 * - the stored hashes give that root at that size;
 * - the last `tailRecords` integrated records still hash to their stored leaves (an edit further
 *   back is found by `hallmark audit verify`, which recomputes the whole tree).
 */
export async function checkTreeOnStart(d: Omit<CheckpointerDeps, "clock">, tailRecords: number): Promise<void> {
  const diverged = (why: string) => tlogError("tlog_tree_diverged", why);
  const { integratedSize, checkpoint } = await d.tree.state();
  const { count, lastSeq } = await d.audit.extent();
  if (count !== lastSeq) throw diverged(`${lastSeq - count} audit record(s) were removed (${count} records, last seq ${lastSeq})`);
  if (lastSeq < integratedSize) throw diverged(`the tree holds ${integratedSize} leaves but only ${lastSeq} audit records remain`);
  const reader = new StoredHashReader(d.tree);
  if (checkpoint) {
    let opened;
    try {
      opened = openCheckpoint(checkpoint.text, d.key.verifier).checkpoint;
    } catch (e) {
      if (isHallmarkError(e)) throw diverged(`the stored checkpoint does not verify with the log key: ${e.message}`);
      throw e;
    }
    if (opened.treeSize !== checkpoint.treeSize || !opened.rootHash.equals(checkpoint.rootHash)) throw diverged("the stored checkpoint's text and columns disagree");
    if (checkpoint.treeSize > integratedSize) throw diverged(`the last checkpoint covers ${checkpoint.treeSize} leaves, the tree only ${integratedSize}`);
    if (!(await treeHash(checkpoint.treeSize, reader)).equals(checkpoint.rootHash)) throw diverged(`the stored tree's root at size ${checkpoint.treeSize} is not the signed one`);
  }
  const n = Math.min(tailRecords, integratedSize);
  if (n === 0) return;
  const records = await d.audit.list(integratedSize - n, n);
  const stored = await reader.readHashes(records.map((r) => ({ level: 0, index: r.seq - 1 })));
  records.forEach((r, i) => {
    if (r.seq !== integratedSize - n + i + 1) throw diverged(`audit record ${integratedSize - n + i + 1} is missing`);
    if (!checkedAuditLeafHash(r)?.equals(stored[i]!)) throw diverged(`audit record ${r.seq} was edited after it was logged`);
  });
}
