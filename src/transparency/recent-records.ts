import type { CommittedAuditRecord } from "../audit/log.js";
import { auditLeafHashOf } from "./audit-leaf.js";

/** Records held at most (about 30 MB at 500 bytes each); past it, integration reads them from the store. */
const MAX_HELD = 65_536;

/**
 * The canonical JSON of the audit records this process committed, by seq, until they are
 * integrated: integration makes their leaves without reading them back from the store and
 * serialising them again (most of what integration cost per issuance, issue 10). Each is exactly what was
 * committed at that seq, hashed into the chain from the same string. What is not held (records of
 * another process or replica, or any past the cap) is read from the store as before.
 */
export class RecentAuditRecords {
  private readonly bySeq = new Map<number, string>();

  add(committed: readonly CommittedAuditRecord[]): void {
    for (const c of committed) if (this.bySeq.size < MAX_HELD) this.bySeq.set(c.seq, c.canonical);
  }

  /**
   * The leaf hashes of records integratedSize + 1, + 2, … while they are held, at most `limit`;
   * forgets those the tree holds already.
   */
  leavesAfter(integratedSize: number, limit: number): Buffer[] {
    // Added in commit order, so in seq order: the integrated ones come first.
    for (const seq of this.bySeq.keys()) {
      if (seq > integratedSize) break;
      this.bySeq.delete(seq);
    }
    const leaves: Buffer[] = [];
    for (let seq = integratedSize + 1; leaves.length < limit; seq++) {
      const canonical = this.bySeq.get(seq);
      if (canonical === undefined) break;
      leaves.push(auditLeafHashOf(canonical));
    }
    return leaves;
  }

  get size(): number {
    return this.bySeq.size;
  }
}
