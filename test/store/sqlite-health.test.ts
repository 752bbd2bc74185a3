import Database from "better-sqlite3";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HallmarkError } from "../../src/errors.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { Store } from "../../src/store/types.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Storage failures other than a full disk (see test/e2e/disk-full.test.ts), with real SQLite:
 * another connection (a CLI process, a second replica) holds the write lock past busy_timeout.
 */
const dir = tempDir("store-health");
const dbPath = join(dir.path, "hallmark.db");
let store: Store;
const t0 = new Date("2026-01-01T00:00:00Z");
const token = (c: string) => ({ tokenHash: c.repeat(64), spiffeId: "spiffe://example.org/n", expiresAt: new Date(t0.getTime() + 60_000), createdAt: t0 });

beforeAll(async () => {
  store = await openSqliteStore(dbPath);
});
afterAll(async () => {
  await store.close();
  dir.remove();
});

// SQLite only: another connection holding the file's write lock is SQLite's failure mode; the
// PostgreSQL store's health (an unreachable server) is tested in postgres-server.test.ts.
describe("SQLite store health (a file write lock held elsewhere: SQLite only)", () => {
  it("a write lock held past busy_timeout is store_unavailable, reads still work, and the next committed write makes it healthy", async () => {
    await store.joinTokens.create(token("a"));
    expect(store.healthy()).toBe(true);
    const other = new Database(dbPath);
    try {
      other.exec("BEGIN EXCLUSIVE");
      const refused = await store.joinTokens.create(token("b")).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(refused).toBeInstanceOf(HallmarkError);
      expect(refused).toMatchObject({ code: "store_unavailable", internal: "SQLITE_BUSY during joinTokens.create" });
      expect(store.healthy()).toBe(false);
      // A read succeeding (WAL readers pass the lock) proves nothing about writes: still not healthy.
      expect(await store.joinTokens.get("a".repeat(64))).toBeDefined();
      expect(store.healthy()).toBe(false);
      other.exec("ROLLBACK");
    } finally {
      other.close();
    }
    await store.joinTokens.create(token("c"));
    expect(store.healthy()).toBe(true);
  });

  it("a refusal about the request (a constraint) is not a storage failure", async () => {
    const duplicate = await store.joinTokens.create(token("c")).then(
      () => "stored",
      (e: unknown) => (e as { code?: string }).code,
    );
    expect(duplicate).toMatch(/^SQLITE_CONSTRAINT/);
    expect(store.healthy()).toBe(true);
  });
});
