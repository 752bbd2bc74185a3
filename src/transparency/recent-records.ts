import type { CommittedAuditRecord } from "../audit/log.js";
import { auditLeafHashOf } from "./audit-leaf.js";

/** Records held at most (about 30 MB at 500 bytes each); past it, integration reads them from the store. */
const MAX_HELD = 65_536;

/**
 * The canonical JSON of the audit records this process committed, by seq, until they are
 * integrated: integration makes their leaves without reading them back from the store and
 * serialising them again (most of what integration cost per issuance, issue 10). What is not
 * held (records of another process or replica, or any past the cap) is read from the store.
 *
 * A commit this process saw can still be missing from the store: a database that acknowledges
 * commits before they are durable (PostgreSQL with synchronous_commit off, a failover to an
 * asynchronous standby) loses the last ones in a crash. So held leaves are only used once the
 * store's record at the last of them carries the same chain hash: that hash covers every record
 * before it, so the store holds exactly the records the leaves were made of.
 */
export class RecentAuditRecords {
  private readonly bySeq = new Map<number, CommittedAuditRecord>();

  add(committed: readonly CommittedAuditRecord[]): void {
    for (const c of committed) if (this.bySeq.size < MAX_HELD) this.bySeq.set(c.seq, c);
  }

  /**
   * The records integratedSize + 1, + 2, … while they are held, at most `limit`, as leaf hashes
   * with the chain hash of the last one; forgets those the tree holds already.
   */
  leavesAfter(integratedSize: number, limit: number): { leaves: Buffer[]; lastHash: string | undefined } {
    // Added in commit order, so in seq order: the integrated ones come first.
    for (const seq of this.bySeq.keys()) {
      if (seq > integratedSize) break;
      this.bySeq.delete(seq);
    }
    const leaves: Buffer[] = [];
    let lastHash: string | undefined;
    for (let seq = integratedSize + 1; leaves.length < limit; seq++) {
      const held = this.bySeq.get(seq);
      if (held === undefined) break;
      leaves.push(auditLeafHashOf(held.canonical));
      lastHash = held.hash;
    }
    return { leaves, lastHash };
  }

  /** Everything held disagrees with the store: from now on, records are read from it. */
  forget(): void {
    this.bySeq.clear();
  }

  get size(): number {
    return this.bySeq.size;
  }
}
