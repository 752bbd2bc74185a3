import { afterAll, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { SQLITE_MIGRATIONS } from "../../src/store/sqlite/migrations.js";
import { KNOWN_SCHEMA_VERSION } from "../../src/store/sqlite/schema.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { runCli } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 8, "running it for real", item 2: a database from a newer Hallmark is refused at start
 * with one line and left untouched; an older one is copied to `hallmark.db.pre-v<N>` and migrated,
 * and the start logs from which version to which.
 */
const dir = tempDir("schema");
afterAll(() => dir.remove());

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const versionOf = (path: string) => {
  const db = new Database(path, { readonly: true });
  try {
    return Number((db.prepare("SELECT MAX(version) AS v FROM schema_version").get() as { v: number }).v);
  } finally {
    db.close();
  }
};

/** A real pino logger whose lines (the schema ones) are kept, parsed. */
function captureLog() {
  const lines: Array<{ details: Record<string, unknown>; message: string }> = [];
  const logger = pino({ level: "info", base: null, timestamp: false }, {
    write: (line: string) => {
      const { msg, level: _level, ...details } = JSON.parse(line) as Record<string, unknown>;
      lines.push({ details, message: String(msg) });
    },
  });
  return { lines, logger };
}

describe("schema versions", () => {
  it("refuses a database from a newer Hallmark at start, with one line, and writes nothing to it", async () => {
    const data = join(dir.path, "newer");
    const dbPath = join(data, "hallmark.db");
    const store = await openSqliteStore(dbPath);
    await store.close();
    const newer = KNOWN_SCHEMA_VERSION + 1;
    const db = new Database(dbPath);
    db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(newer);
    db.close();
    // The data directory's lock file (server.lock) is the server's, not the database's.
    const files = () => readdirSync(data).filter((f) => f !== "server.lock").sort();
    const before = { digest: sha256(dbPath), files: files() };

    const r = await runCli(["server", "--data-dir", data, "--listen", "127.0.0.1:0"], { HALLMARK_LOG_LEVEL: "silent" });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      `hallmark: store_too_new: ${dbPath} has schema version ${newer}; this hallmark knows up to ${KNOWN_SCHEMA_VERSION}: upgrade hallmark or restore an older backup`,
    );
    // Untouched: same bytes, no new file (no token, no socket, no pre-migration copy).
    expect({ digest: sha256(dbPath), files: files() }).toEqual(before);
    expect(versionOf(dbPath)).toBe(newer);
    // In process too, with the same code.
    await expect(openSqliteStore(dbPath)).rejects.toMatchObject({ code: "store_too_new" });
    expect(sha256(dbPath)).toBe(before.digest);
  });

  it("copies an older database to hallmark.db.pre-vN before migrating it, and logs from which version to which", async () => {
    expect(KNOWN_SCHEMA_VERSION).toBeGreaterThan(1);
    const dbPath = join(dir.path, "older.db");
    // A database as the first release left it: migration 1 only, with a node in it.
    const old = new Database(dbPath);
    old.pragma("journal_mode = WAL");
    old.exec("CREATE TABLE schema_version (version INTEGER NOT NULL)");
    old.exec(SQLITE_MIGRATIONS[0]!);
    old.prepare("INSERT INTO schema_version (version) VALUES (1)").run();
    old.prepare(
      `INSERT INTO nodes (spiffe_id, attestor_type, selectors, can_reattest, serial, expires_at, created_at, updated_at)
       VALUES ('spiffe://example.org/node/old', 'join_token', '[]', 0, 'ab', 1, 1, 1)`,
    ).run();
    old.close();

    const log = captureLog();
    const store = await openSqliteStore(dbPath, { log: log.logger });
    try {
      expect((await store.nodes.get("spiffe://example.org/node/old"))?.serial).toBe("ab");
      expect((await store.nodes.get("spiffe://example.org/node/old"))?.previousSerial).toBeUndefined();
    } finally {
      await store.close();
    }
    const copy = `${dbPath}.pre-v${KNOWN_SCHEMA_VERSION}`;
    expect(log.lines).toEqual([
      {
        details: { path: dbPath, from: 1, to: KNOWN_SCHEMA_VERSION, backup: copy },
        message: `database schema migrated from version 1 to ${KNOWN_SCHEMA_VERSION}`,
      },
    ]);
    expect(versionOf(dbPath)).toBe(KNOWN_SCHEMA_VERSION);
    // The copy is the database as it was: version 1, the node, private.
    expect(versionOf(copy)).toBe(1);
    expect(statSync(copy).mode & 0o777).toBe(0o600);
    const pre = new Database(copy, { readonly: true });
    try {
      expect(pre.prepare("SELECT spiffe_id FROM nodes").all()).toEqual([{ spiffe_id: "spiffe://example.org/node/old" }]);
    } finally {
      pre.close();
    }

    // Opening it again migrates nothing, copies nothing, logs nothing.
    const copyDigest = sha256(copy);
    const again = captureLog();
    await (await openSqliteStore(dbPath, { log: again.logger })).close();
    expect(again.lines).toEqual([]);
    expect(sha256(copy)).toBe(copyDigest);
  });

  it("creates a new database without a copy, and logs the migration from version 0", async () => {
    const dbPath = join(dir.path, "fresh", "hallmark.db");
    const log = captureLog();
    await (await openSqliteStore(dbPath, { log: log.logger })).close();
    expect(log.lines.map((l) => l.message)).toEqual([`database schema migrated from version 0 to ${KNOWN_SCHEMA_VERSION}`]);
    expect(readdirSync(join(dir.path, "fresh")).filter((f) => f.includes(".pre-v"))).toEqual([]);
    expect(existsSync(dbPath)).toBe(true);
  });
});
