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

/** The store's audit repository, its list() calls counted: a list is a read-back of records. */
function countingLists(audit: AuditRepository): { repo: AuditRepository; lists: () => number } {
  let lists = 0;
  return {
    repo: {
      appendBatch: (items, hasher) => audit.appendBatch(items, hasher),
      list: (after, limit) => {
        lists += 1;
        return audit.list(after, limit);
      },
      tail: (limit) => audit.tail(limit),
      extent: () => audit.extent(),
    },
    lists: () => lists,
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
    const counted = countingLists(store.audit);
    const recent = new RecentAuditRecords();
    const audit = new AuditLog(store.audit);
    audit.onAppend((committed) => recent.add(committed));
    await append(audit, 150, "a");
    await append(audit, 7, "b");
    const integration = { audit: counted.repo, tree: store.transparency, batch: 100, recent };
    expect(await integrateOnce(integration)).toBe(100);
    expect(await integrateOnce(integration)).toBe(57);
    expect(await integrateOnce(integration)).toBe(0);
    // Held records came from memory: the only read was the last call's, which found nothing.
    expect(counted.lists()).toBe(1);
    expect(recent.size).toBe(0);
    await expectTreeOfRecords(store);
    await store.close();
  });

  it("reads the records of another process from the store, and interleaved with its own makes one tree", async () => {
    const path = join(dir.path, "shared.db");
    const store = await openSqliteStore(path);
    const other = await openSqliteStore(path);
    const counted = countingLists(store.audit);
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
    // Its own first ten came from memory; from the other process's first record on, the rest was
    // read from the store in one list (then one more list that found nothing).
    expect(counted.lists()).toBe(2);
    await expectTreeOfRecords(store);
    await other.close();
    await store.close();
  });

  it("forgets what the tree holds already", async () => {
    const store = await openSqliteStore(join(dir.path, "edited.db"));
    const recent = new RecentAuditRecords();
    const audit = new AuditLog(store.audit);
    audit.onAppend((committed) => recent.add(committed));
    await append(audit, 3, "e");
    expect(await integrateOnce({ audit: store.audit, tree: store.transparency, batch: 10, recent })).toBe(3);
    expect(recent.leavesAfter(3, 10)).toEqual([]);
    expect(recent.size).toBe(0);
    await store.close();
  });
});
