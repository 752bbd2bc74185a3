import Database from "better-sqlite3";
import { randomBytes } from "node:crypto";
import { closeSync, openSync, renameSync, rmSync } from "node:fs";
import { HallmarkError } from "../../errors.js";
import { SQLITE_MIGRATIONS } from "./migrations.js";

type Db = Database.Database;

/** The highest schema version this build knows: one per migration. */
export const KNOWN_SCHEMA_VERSION = SQLITE_MIGRATIONS.length;

/** Where the schema steps of a start are told (pino's logger fits). */
export interface SchemaLog {
  info(details: object, message: string): void;
}

export interface SchemaOptions {
  log?: SchemaLog | undefined;
  /**
   * Copy an existing database to `<path>.pre-v<target>` (0600, through the online backup API)
   * before migrating it: an upgrade that goes wrong, or a downgrade, then has the exact database
   * the previous version wrote. Default true; never for ":memory:" or a new, empty database.
   */
  backupBeforeMigrate?: boolean | undefined;
}

/**
 * The schema version recorded in the database; 0 for a new one. Only reads: it runs before
 * anything is written, so a database it refuses is left as it was.
 */
export function readSchemaVersion(db: Db): number {
  const table = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").get();
  if (!table) return 0;
  const row = db.prepare("SELECT MAX(version) AS v FROM schema_version").get() as { v: unknown };
  return Number(row.v ?? 0);
}

/**
 * A database written by a newer Hallmark holds tables and rows this build does not understand:
 * running on it could corrupt them, and a downgrade by accident is the usual cause. Refuse.
 */
export function refuseNewerSchema(path: string, version: number): void {
  if (version <= KNOWN_SCHEMA_VERSION) return;
  throw new HallmarkError(
    "store_too_new",
    `${path} has schema version ${version}; this hallmark knows up to ${KNOWN_SCHEMA_VERSION}: upgrade hallmark or restore an older backup`,
  );
}

/**
 * With migrations off (`hallmark server --no-migrate`, for operators who migrate with
 * `hallmark store migrate`), a schema behind this build is refused rather than used: its tables
 * lack what this build reads and writes.
 */
export function refuseOlderSchema(where: string, version: number): void {
  if (version >= KNOWN_SCHEMA_VERSION) return;
  throw new HallmarkError(
    "store_schema_behind",
    `${where} has schema version ${version}; this hallmark needs ${KNOWN_SCHEMA_VERSION}: run 'hallmark store migrate' or start without --no-migrate`,
  );
}

/**
 * Brings the schema to KNOWN_SCHEMA_VERSION: each pending migration once, in its own
 * transaction, so a crash leaves the database at a version boundary. Call after
 * refuseNewerSchema.
 */
export async function migrateSchema(db: Db, path: string, opts: SchemaOptions = {}): Promise<void> {
  const from = readSchemaVersion(db);
  const to = KNOWN_SCHEMA_VERSION;
  if (from >= to) return;
  let backup: string | undefined;
  if (from > 0 && path !== ":memory:" && opts.backupBeforeMigrate !== false) {
    backup = `${path}.pre-v${to}`;
    await backupDatabase(db, backup);
  }
  db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
  for (let version = from + 1; version <= to; version++) {
    db.transaction(() => {
      db.exec(SQLITE_MIGRATIONS[version - 1]!);
      db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(version);
    })();
  }
  opts.log?.info({ path, from, to, ...(backup ? { backup } : {}) }, `database schema migrated from version ${from} to ${to}`);
}

/**
 * A consistent copy of the live database at `path`, through SQLite's online backup API (it
 * copies page by page between other statements, so the server keeps serving), written to a
 * temporary file created 0600 and renamed into place: a reader never finds half a copy, and the
 * copy is never readable by others, not even briefly. The copy is in rollback-journal mode (one
 * file); a server that opens it as its database puts it back in WAL mode.
 */
export async function backupDatabase(db: Db, path: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    // Created empty with its final mode first: SQLite then writes into it and keeps the mode.
    closeSync(openSync(tmp, "wx", 0o600));
    await db.backup(tmp);
    // The copy carries the live database's WAL mode; a backup is one self-contained file, and
    // opening it (to inspect it, or on restore) should not grow -wal and -shm files beside it.
    const copy = new Database(tmp);
    try {
      copy.pragma("journal_mode = DELETE");
    } finally {
      copy.close();
    }
    renameSync(tmp, path);
  } catch (cause) {
    rmSync(tmp, { force: true });
    throw new HallmarkError("backup_failed", "the database copy could not be written", { cause, internal: path });
  }
}
