import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AuditLog } from "../../src/audit/log.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { AuditRepository, Store } from "../../src/store/types.js";
import { integrateOnce } from "../../src/transparency/integrator.js";
import { MemoryHashStore, treeHash } from "../../src/transparency/merkle.js";
import { RecentAuditRecords } from "../../src/transparency/recent-records.js";
import { StoredHashReader } from "../../src/transparency/stored-hashes.js";
import { auditLeafHash } from "../../src/transparency/audit-leaf.js";
import { verifyAuditTree } from "../../src/transparency/tree-verify.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 10: the integrator makes the leaves of this process's own records from the canonical JSON
 * the audit log committed, without reading them back. The tree must be the one the records give,
 * whoever appended them: records of another process (another AuditLog on the same database) are
 * read from the store, and an interleaving of both is one tree.
 */
const dir = tempDir("recent-records");
afterAll(() => dir.remove());

/** The store's audit repository, counting the records its list() reads back. */
function countingReads(audit: AuditRepository): { repo: AuditRepository; rowsRead: () => number } {
  let rows = 0;
  return {
    repo: {
      appendBatch: (items, hasher) => audit.appendBatch(items, hasher),
      list: async (after, limit) => {
        const read = await audit.list(after, limit);
        rows += read.length;
        return read;
      },
      tail: (limit) => audit.tail(limit),
      extent: () => audit.extent(),
    },
    rowsRead: () => rows,
  };
}

const append = (audit: AuditLog, n: number, tag: string) =>
  Promise.all(Array.from({ length: n }, (_, i) => audit.append({ time: new Date(), event: "issue_jwt", outcome: "success", actor: "spiffe://example.org/node", spiffeId: `spiffe://example.org/${tag}`, details: { i, tag } })));

/** The tree as stored equals the one recomputed from the records: every leaf, and the root. */
async function expectTreeOfRecords(store: Store): Promise<void> {
  expect(await verifyAuditTree(store.audit, store.transparency)).toMatchObject({ ok: true });
  const { integratedSize } = await store.transparency.state();
  const memory = new MemoryHashStore();
  await memory.appendLeafHashes((await store.audit.list(0, integratedSize)).map(auditLeafHash));
  expect((await treeHash(integratedSize, new StoredHashReader(store.transparency))).equals(await treeHash(integratedSize, memory))).toBe(true);
}

describe("integration from the records this process committed", () => {
  it("integrates its own records without reading them back, into the tree the records give", async () => {
    const store = await openSqliteStore(join(dir.path, "own.db"));
    const counted = countingReads(store.audit);
    const recent = new RecentAuditRecords();
    const audit = new AuditLog(store.audit);
    audit.onAppend((committed) => recent.add(committed));
    await append(audit, 150, "a");
    await append(audit, 7, "b");
    const integration = { audit: counted.repo, tree: store.transparency, batch: 100, recent };
    expect(await integrateOnce(integration)).toBe(100);
    expect(await integrateOnce(integration)).toBe(57);
    expect(await integrateOnce(integration)).toBe(0);
    // Held records came from memory: one record read per batch (the last one's chain hash checked), not 157.
    expect(counted.rowsRead()).toBe(2);
    expect(recent.size).toBe(0);
    await expectTreeOfRecords(store);
    await store.close();
  });

  it("reads the records of another process from the store, and interleaved with its own makes one tree", async () => {
    const path = join(dir.path, "shared.db");
    const store = await openSqliteStore(path);
    const other = await openSqliteStore(path);
    const counted = countingReads(store.audit);
    const recent = new RecentAuditRecords();
    const mine = new AuditLog(store.audit);
    mine.onAppend((committed) => recent.add(committed));
    const theirs = new AuditLog(other.audit);
    for (let round = 0; round < 5; round++) {
      await append(mine, 10, `mine-${round}`);
      await append(theirs, 3, `theirs-${round}`);
    }
    const integration = { audit: counted.repo, tree: store.transparency, batch: 1000, recent };
    let total = 0;
    for (let n = await integrateOnce(integration); n > 0; n = await integrateOnce(integration)) total += n;
    expect(total).toBe(65);
    // Its own first ten came from memory (one record read to check them); from the other
    // process's first record on, the other 55 were read from the store.
    expect(counted.rowsRead()).toBe(1 + 55);
    await expectTreeOfRecords(store);
    await other.close();
    await store.close();
  });

  it("never integrates a commit the store does not have (a database that lost acknowledged commits in a crash)", async () => {
    const store = await openSqliteStore(join(dir.path, "lost.db"));
    const recent = new RecentAuditRecords();
    const theirs = new AuditLog(store.audit);
    await append(theirs, 2, "kept");
    // This process saw record 3 committed; the store lost it.
    const lost = { seq: 3, hash: "f".repeat(64), canonical: '{"lost":true}' };
    recent.add([lost]);
    const integration = { audit: store.audit, tree: store.transparency, batch: 10, recent };
    expect(await integrateOnce(integration)).toBe(2);
    recent.add([lost]);
    expect(await integrateOnce(integration)).toBe(0);
    expect(recent.size).toBe(0);
    // Another record 3 is committed in its place: the tree takes that one, from the store.
    recent.add([lost]);
    await append(theirs, 1, "replacement");
    expect(await integrateOnce(integration)).toBe(1);
    await expectTreeOfRecords(store);
    await store.close();
  });

  it("forgets what the tree holds already", async () => {
    const store = await openSqliteStore(join(dir.path, "edited.db"));
    const recent = new RecentAuditRecords();
    const audit = new AuditLog(store.audit);
    audit.onAppend((committed) => recent.add(committed));
    await append(audit, 3, "e");
    expect(await integrateOnce({ audit: store.audit, tree: store.transparency, batch: 10, recent })).toBe(3);
    expect(recent.leavesAfter(3, 10).leaves).toEqual([]);
    expect(recent.size).toBe(0);
    await store.close();
  });
});
