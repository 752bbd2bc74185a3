import { createHash } from "node:crypto";
import { AUDIT_LEAF_VERSION } from "./audit-leaf.js";
import { tlogError } from "./errors.js";
import { EMPTY_TREE_HASH, leafHash, nodeHash, verifyConsistency } from "./merkle.js";
import { decodeStrictBase64 } from "./note.js";
import { TILE_WIDTH, decodeEntryBundle, entryBundlePath } from "./tiles.js";
import { type TrustPolicy, openTrustedCheckpoint } from "./trust-policy.js";

/**
 * A monitor (README, Transparency log): follows the log from its first leaf, keeping only the
 * right edge of the tree (the hashes of its perfect subtrees, at most log2 n), so that each new
 * checkpoint is checked twice over: a consistency proof from the last one seen, and the new
 * leaves themselves, appended to the edge, must give the new root. Each leaf must also be the
 * next audit record of the chain (seq = index + 1, prevHash = the previous record's hash): a
 * removed, reordered or edited leaf is refused even before the root is compared.
 */

export interface MonitorState {
  origin: string;
  /** The last checkpoint seen and verified, as served (signed note). */
  checkpoint: string;
  treeSize: number;
  /** The right edge: hashes of the perfect subtrees of [0, treeSize), largest first, base64. */
  edge: string[];
  /** The hash of the last audit record (its chain hash, hex); null before the first. */
  lastRecordHash: string | null;
}

/** What the monitor reads: the log's read API (src/client/log-client.ts). */
export interface LogSource {
  checkpoint(): Promise<string>;
  consistency(first: number, second: number): Promise<Buffer[]>;
  entryBundle(path: string): Promise<Buffer>;
}

/** One new leaf as printed: what was decided, about whom. */
export interface MonitoredLeaf {
  index: number;
  time: string;
  event: string;
  outcome: string;
  spiffeId: string | null;
  serial: string | null;
}

const invalid = (why: string) => tlogError("tlog_entries_invalid", why);

/** The audit record in a leaf's entry (src/transparency/audit-leaf.ts), and its chain hash. */
export function parseAuditEntry(entry: Buffer, index: number): { body: Record<string, unknown>; hash: string } {
  const text = entry.toString("utf8");
  const prefix = `${AUDIT_LEAF_VERSION}\n`;
  if (!text.startsWith(prefix)) throw invalid(`leaf ${index} is not a ${AUDIT_LEAF_VERSION} entry`);
  const json = text.slice(prefix.length);
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(json) as Record<string, unknown>;
  } catch {
    throw invalid(`leaf ${index}'s record is not JSON`);
  }
  if (typeof body !== "object" || body === null) throw invalid(`leaf ${index}'s record is not an object`);
  // The entry holds the canonical JSON the chain hash covers, so the hash is of these very bytes.
  return { body, hash: createHash("sha256").update(json, "utf8").digest("hex") };
}

class Edge {
  constructor(private readonly nodes: Array<{ size: number; hash: Buffer }>) {}

  static of(treeSize: number, hashes: readonly string[]): Edge {
    const sizes: number[] = [];
    for (let bit = 2 ** 52; bit >= 1; bit /= 2) if (Math.floor(treeSize / bit) % 2 === 1) sizes.push(bit);
    if (sizes.length !== hashes.length) throw tlogError("tlog_state_invalid", `the state's edge has ${hashes.length} hashes, a tree of ${treeSize} needs ${sizes.length}`);
    return new Edge(
      hashes.map((h, i) => {
        const hash = decodeStrictBase64(h);
        if (!hash || hash.length !== 32) throw tlogError("tlog_state_invalid", "the state's edge holds a hash that is not base64 of 32 bytes");
        return { size: sizes[i]!, hash };
      }),
    );
  }

  append(leaf: Buffer): void {
    this.nodes.push({ size: 1, hash: leaf });
    for (let n = this.nodes.length; n >= 2 && this.nodes[n - 1]!.size === this.nodes[n - 2]!.size; n--) {
      const right = this.nodes.pop()!;
      const left = this.nodes.pop()!;
      this.nodes.push({ size: left.size * 2, hash: nodeHash(left.hash, right.hash) });
    }
  }

  root(): Buffer {
    if (this.nodes.length === 0) return EMPTY_TREE_HASH;
    let h = this.nodes[this.nodes.length - 1]!.hash;
    for (let i = this.nodes.length - 2; i >= 0; i--) h = nodeHash(this.nodes[i]!.hash, h);
    return h;
  }

  encode(): string[] {
    return this.nodes.map((n) => n.hash.toString("base64"));
  }
}

/**
 * One step: the current checkpoint under the policy, checked against the state (none: a monitor
 * starting at leaf 0). Returns the new state and the new leaves; the caller stores the state
 * only after this returns, so a refusal leaves the last good state in place.
 */
export async function monitorStep(source: LogSource, policy: TrustPolicy, state: MonitorState | undefined): Promise<{ state: MonitorState; leaves: MonitoredLeaf[] }> {
  const signed = await source.checkpoint();
  const { checkpoint: cp } = openTrustedCheckpoint(signed, policy);
  const from = state?.treeSize ?? 0;
  if (state) {
    if (state.origin !== cp.origin) throw tlogError("tlog_checkpoint_inconsistent", `the log's origin is ${cp.origin}, the state follows ${state.origin}`);
    if (cp.treeSize < from) throw tlogError("tlog_checkpoint_inconsistent", `the log's tree shrank from ${from} to ${cp.treeSize} leaves (a rollback)`);
    const old = openTrustedCheckpoint(state.checkpoint, { ...policy, witnessesNeeded: 0 }).checkpoint;
    try {
      verifyConsistency(from, cp.treeSize, old.rootHash, cp.rootHash, await source.consistency(from, cp.treeSize));
    } catch (e) {
      throw tlogError("tlog_checkpoint_inconsistent", `the checkpoint of size ${cp.treeSize} is not consistent with the one of size ${from} seen before: ${(e as Error).message}`, { cause: e });
    }
  }
  const edge = Edge.of(from, state?.edge ?? []);
  let lastHash = state?.lastRecordHash ?? null;
  const leaves: MonitoredLeaf[] = [];
  for (let bundle = Math.floor(from / TILE_WIDTH); bundle * TILE_WIDTH < cp.treeSize; bundle++) {
    const width = Math.min(TILE_WIDTH, cp.treeSize - bundle * TILE_WIDTH);
    const entries = decodeEntryBundle(await source.entryBundle(entryBundlePath(bundle, width)), width);
    entries.forEach((entry, i) => {
      const index = bundle * TILE_WIDTH + i;
      if (index < from) return;
      const { body, hash } = parseAuditEntry(entry, index);
      if (body.seq !== index + 1) throw invalid(`leaf ${index} holds audit record ${String(body.seq)}, not ${index + 1}: a leaf was removed or moved`);
      if (lastHash !== null && body.prevHash !== lastHash) throw invalid(`leaf ${index}'s record does not follow the previous record's hash: a leaf was removed, moved or edited`);
      lastHash = hash;
      edge.append(leafHash(entry));
      const str = (k: string) => (typeof body[k] === "string" ? (body[k] as string) : null);
      leaves.push({ index, time: str("time") ?? "", event: str("event") ?? "", outcome: str("outcome") ?? "", spiffeId: str("spiffeId"), serial: str("serial") });
    });
  }
  if (!edge.root().equals(cp.rootHash)) throw invalid(`the leaves ${from}..${cp.treeSize - 1} do not lead to the checkpoint's root hash`);
  return { state: { origin: cp.origin, checkpoint: signed, treeSize: cp.treeSize, edge: edge.encode(), lastRecordHash: lastHash }, leaves };
}
