import Database from "better-sqlite3";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SQLITE_MIGRATIONS } from "../../src/store/sqlite/migrations.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { EntryRecord } from "../../src/store/types.js";
import { forEachEngine } from "../helpers/store-engines.js";
import { tempDir } from "../helpers/tmp.js";

/** The entries' change log (migration 3): revisions, tombstones, pruning, and a database migrated from version 2. */
const dir = tempDir("entry-changes");
afterAll(() => dir.remove());
const t0 = new Date("2026-01-01T00:00:00Z");
const at = (s: number) => new Date(t0.getTime() + s * 1000);
const entry = (id: string, createdAt: Date, parentId = "spiffe://example.org/node/a"): EntryRecord => ({
  id,
  spiffeId: `spiffe://example.org/w/${id}`,
  parentId,
  selectors: ["unix:uid:1"],
  dnsNames: [],
  hint: `hint-${id}`,
  admin: false,
  createdAt,
});

forEachEngine("entry change log", (engine) => {
it("logs creations and tombstones with growing revisions, and prunes without ever going back", async () => {
  const store = await (await engine.newDatabase()).open();
  try {
    expect(await store.entries.revision()).toBe(0);
    await store.entries.create(entry("e1", at(0)));
    await store.entries.create(entry("e2", at(1), "spiffe://example.org/node/b"));
    expect(await store.entries.delete("e1", at(2))).toBe(true);
    expect(await store.entries.delete("e1", at(3))).toBe(false);
    expect(await store.entries.revision()).toBe(3);

    const all = (await store.entries.changesSince(0, 10))!;
    expect(all.changes.map((c) => [c.revision, c.kind, c.entryId, c.parentId, c.entry?.hint])).toEqual([
      [1, "created", "e1", "spiffe://example.org/node/a", undefined], // deleted since: no entry to send
      [2, "created", "e2", "spiffe://example.org/node/b", "hint-e2"],
      [3, "deleted", "e1", "spiffe://example.org/node/a", undefined],
    ]);
    expect(all).toMatchObject({ revision: 3, more: false });
    expect(await store.entries.changesSince(0, 2)).toMatchObject({ revision: 2, more: true });
    expect(await store.entries.changesSince(4, 10)).toBeUndefined();

    expect(await store.entries.pruneChanges(at(2))).toBe(2);
    // Revision 0 and 1 are before what the log holds now: the caller starts over.
    expect(await store.entries.changesSince(1, 10)).toBeUndefined();
    expect((await store.entries.changesSince(2, 10))!.changes.map((c) => c.revision)).toEqual([3]);
    expect(await store.entries.pruneChanges(at(10))).toBe(1);
    expect(await store.entries.revision()).toBe(3);
    expect(await store.entries.changesSince(3, 10)).toEqual({ changes: [], revision: 3, more: false });
    expect(await store.entries.changesSince(2, 10)).toBeUndefined();
    await store.entries.create(entry("e3", at(11)));
    expect((await store.entries.changesSince(3, 10))!.changes.map((c) => [c.revision, c.entryId])).toEqual([[4, "e3"]]);
  } finally {
    await store.close();
  }
});

it("pages a parent's entries in id order, bytewise", async () => {
  const store = await (await engine.newDatabase()).open();
  try {
    for (const id of ["b", "a-1", "B", "a", "c"]) await store.entries.create({ ...entry(id, at(0)), spiffeId: `spiffe://example.org/w/${id}` });
    await store.entries.create(entry("z", at(0), "spiffe://example.org/node/other"));
    expect((await store.entries.listByParent("spiffe://example.org/node/a", undefined, 3)).map((e) => e.id)).toEqual(["B", "a", "a-1"]);
    expect((await store.entries.listByParent("spiffe://example.org/node/a", "a-1", 3)).map((e) => e.id)).toEqual(["b", "c"]);
  } finally {
    await store.close();
  }
});
});

// SQLite-only: it writes a version-2 database by hand with SQLite's own migrations.
describe("SQLite migration 3", () => {
it("logs the entries of a version-2 database as created when it migrates", async () => {
  const path = join(dir.path, "b.db");
  // A database written by a version-2 server: migrations 1 and 2 only, and one entry.
  const db = new Database(path);
  db.exec("CREATE TABLE schema_version (version INTEGER NOT NULL)");
  SQLITE_MIGRATIONS.slice(0, 2).forEach((sql, i) => {
    db.exec(sql);
    db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(i + 1);
  });
  db.prepare("INSERT INTO entries (id, spiffe_id, parent_id, selectors, dns_names, created_at) VALUES (?, ?, ?, ?, ?, ?)").run(
    "old",
    "spiffe://example.org/w/old",
    "spiffe://example.org/node/a",
    JSON.stringify(["unix:uid:1"]),
    "[]",
    at(0).getTime(),
  );
  db.close();
  const store = await openSqliteStore(path, { backupBeforeMigrate: false });
  try {
    const page = (await store.entries.changesSince(0, 10))!;
    expect(page.changes.map((c) => [c.kind, c.entryId, c.entry?.hint])).toEqual([["created", "old", ""]]);
  } finally {
    await store.close();
  }
});
});
