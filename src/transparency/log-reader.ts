import type { AuditRepository, TlogSignedCheckpoint, TransparencyRepository } from "../store/types.js";
import { auditLeafEntry } from "./audit-leaf.js";
import { tlogError } from "./errors.js";
import type { LogKey } from "./log-key.js";
import { consistencyProof, inclusionProof } from "./merkle.js";
import { formatTlogProof } from "./receipt.js";
import { StoredHashReader } from "./stored-hashes.js";
import { type TilePath, TILE_WIDTH, encodeEntryBundle, entryBundleRange, readTile, tileExists, tilePath } from "./tiles.js";

/** A receipt: everything an offline verifier needs to check that leaf `index` is in the log. */
export interface Receipt {
  index: number;
  treeSize: number;
  /** The leaf's entry bytes (src/transparency/audit-leaf.ts). */
  entry: Buffer;
  inclusion: Buffer[];
  /** The signed checkpoint the proof leads to. */
  checkpoint: string;
  /** The same, as C2SP tlog-proof text (c2sp.org/tlog-proof@v1), the entry as its `extra` line. */
  tlogProof: string;
}

/**
 * What the read API serves, all bounded by the last signed checkpoint: a client can only check a
 * proof against a tree head it can verify, so nothing past it is served (tlog_not_covered).
 */
export class TransparencyReader {
  private readonly reader: StoredHashReader;

  constructor(
    private readonly tree: TransparencyRepository,
    private readonly audit: AuditRepository,
    readonly key: LogKey,
    /** The checkpoint as served: the stored note with the witnesses' cosignatures appended, when any. */
    private readonly cosigned: (cp: TlogSignedCheckpoint) => string = (cp) => cp.text,
  ) {
    this.reader = new StoredHashReader(tree);
  }

  /** The last signed checkpoint; tlog_not_covered before the first. */
  async checkpoint(): Promise<TlogSignedCheckpoint> {
    const { checkpoint } = await this.tree.state();
    if (!checkpoint) throw tlogError("tlog_not_covered", "the log has not signed a checkpoint yet");
    return { ...checkpoint, text: this.cosigned(checkpoint) };
  }

  private async covered(size: number): Promise<TlogSignedCheckpoint> {
    const cp = await this.checkpoint();
    if (size > cp.treeSize) throw tlogError("tlog_not_covered", `the last signed checkpoint covers ${cp.treeSize} leaves, not ${size}`);
    return cp;
  }

  async inclusion(index: number, size: number): Promise<Buffer[]> {
    if (index >= size) throw tlogError("tlog_out_of_range", `leaf ${index} is not in a tree of size ${size}`);
    await this.covered(size);
    return inclusionProof(index, size, this.reader);
  }

  async consistency(first: number, second: number): Promise<Buffer[]> {
    if (first > second) throw tlogError("tlog_out_of_range", `tree size ${first} is larger than ${second}`);
    await this.covered(second);
    return consistencyProof(first, second, this.reader);
  }

  /** A hash tile or an entry bundle, as the last checkpoint has it; `full` says it can never change. */
  async tile(t: TilePath): Promise<{ data: Buffer; full: boolean }> {
    const { treeSize } = await this.checkpoint();
    const hashTile = t.kind === "hashes" ? t : { level: 0, index: t.index, width: t.width };
    if (!tileExists(hashTile, treeSize)) throw tlogError("tlog_not_covered", `the last signed checkpoint (size ${treeSize}) has no ${tilePath(hashTile)}`);
    const full = t.width === TILE_WIDTH;
    if (t.kind === "hashes") return { data: await readTile(t, treeSize, this.reader), full };
    const { start, end } = entryBundleRange(t.index, t.width);
    const records = await this.audit.list(start, end - start);
    if (records.length !== end - start || records.some((r, i) => r.seq !== start + i + 1)) {
      throw tlogError("tlog_tree_diverged", `audit records ${start + 1}..${end} are not all there`);
    }
    return { data: encodeEntryBundle(records.map(auditLeafEntry)), full };
  }

  /** The receipt of leaf `index`, against the last signed checkpoint. */
  async receipt(index: number): Promise<Receipt> {
    const cp = await this.checkpoint();
    if (index >= cp.treeSize) throw tlogError("tlog_not_covered", `leaf ${index} is not covered by the last signed checkpoint (size ${cp.treeSize}) yet`);
    const [record] = await this.audit.list(index, 1);
    if (!record || record.seq !== index + 1) throw tlogError("tlog_tree_diverged", `audit record ${index + 1} is missing`);
    const entry = auditLeafEntry(record);
    const inclusion = await inclusionProof(index, cp.treeSize, this.reader);
    const tlogProof = formatTlogProof({ index, entry, inclusion, checkpoint: cp.text });
    return { index, treeSize: cp.treeSize, entry, inclusion, checkpoint: cp.text, tlogProof };
  }
}
