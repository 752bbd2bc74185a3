import Database from "better-sqlite3";
import { HallmarkError, isHallmarkError } from "../errors.js";
import { createPool, inTransaction, redactUrl, withoutSecrets } from "./postgres/connection.js";
import { migratePostgresSchema } from "./postgres/schema.js";
import { KNOWN_SCHEMA_VERSION, readSchemaVersion, refuseNewerSchema, refuseOlderSchema } from "./sqlite/schema.js";

/** One-row tables: their row is updated on the target (which has its own since migration), never inserted. */
const SINGLETONS = ["bundle_state", "tlog_state"];
/** SQLite's bookkeeping, not data. */
const SKIPPED = new Set(["schema_version", "sqlite_sequence", ...SINGLETONS]);
/** Rows per INSERT: well under PostgreSQL's 65,535 parameters for the widest table. */
const BATCH_ROWS = 500;

export interface StoreCopyReport {
  /** Rows copied, by table. */
  tables: Record<string, number>;
  schemaVersion: number;
}

/**
 * Copies a whole SQLite datastore into an empty PostgreSQL database (`hallmark store copy`):
 * the source is read in one read transaction (a consistent snapshot; stop the server first all the
 * same, or records written after it are not copied), the target is migrated to this build's
 * schema and then filled in ONE transaction, so a failure leaves it empty. Rows are copied column
 * for column, the audit log included as it is (sequence numbers, hashes), so the chain verifies on
 * the target; the bundle sequence, the transparency log state and the entry revision carry over.
 * A target holding any row is refused (store_not_empty), and so is a source whose schema is not
 * this build's (store_schema_behind: start a server on it once, or store_too_new).
 */
export async function copySqliteToPostgres(sqlitePath: string, target: { url: string; password?: string | undefined }): Promise<StoreCopyReport> {
  let source: Database.Database;
  try {
    source = new Database(sqlitePath, { readonly: true, fileMustExist: true });
  } catch (cause) {
    throw new HallmarkError("datastore_open_failed", `cannot open the datastore ${sqlitePath}: ${(cause as Error).message}`, { cause });
  }
  const where = redactUrl(target.url);
  const pool = createPool({ ...target, pool: { max: 2, connectionTimeout: 10, idleTimeout: 10, statementTimeout: 3600 } });
  pool.on("error", () => undefined);
  try {
    const version = readSchemaVersion(source);
    refuseNewerSchema(sqlitePath, version);
    refuseOlderSchema(sqlitePath, version);
    await migratePostgresSchema(pool, where);
    source.exec("BEGIN");
    const tables = (source.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as Array<{ name: string }>)
      .map((t) => t.name)
      .filter((name) => !SKIPPED.has(name));
    const copied: Record<string, number> = {};
    await inTransaction(pool, async (c) => {
      for (const table of [...tables, ...SINGLETONS, "entry_revision"]) {
        const r = await c.query(`SELECT COUNT(*) AS n FROM ${table} WHERE NOT (${emptyTargetRow(table)})`);
        if (Number((r.rows[0] as { n: unknown }).n) > 0) {
          throw new HallmarkError("store_not_empty", `${where} holds data already (table ${table}): copy only into a new, empty database`);
        }
      }
      for (const table of tables) {
        const rows = source.prepare(`SELECT * FROM ${table}`).all() as Array<Record<string, unknown>>;
        copied[table] = rows.length;
        for (let i = 0; i < rows.length; i += BATCH_ROWS) {
          const batch = rows.slice(i, i + BATCH_ROWS);
          const columns = Object.keys(batch[0]!);
          const values = batch.map((_, r) => `(${columns.map((_c, k) => `$${r * columns.length + k + 1}`).join(", ")})`);
          await c.query(`INSERT INTO ${table} (${columns.join(", ")}) VALUES ${values.join(", ")}`, batch.flatMap((row) => columns.map((k) => row[k])));
        }
      }
      const bundle = source.prepare("SELECT sequence FROM bundle_state WHERE id = 1").get() as { sequence: number };
      await c.query("UPDATE bundle_state SET sequence = $1 WHERE id = 1", [bundle.sequence]);
      const tlog = source.prepare("SELECT * FROM tlog_state WHERE id = 1").get() as Record<string, unknown>;
      await c.query("UPDATE tlog_state SET integrated_size = $1, checkpoint = $2, checkpoint_size = $3, checkpoint_root = $4, checkpoint_at = $5 WHERE id = 1", [
        tlog.integrated_size,
        tlog.checkpoint,
        tlog.checkpoint_size,
        tlog.checkpoint_root,
        tlog.checkpoint_at,
      ]);
      // The revision agents continue from: SQLite's AUTOINCREMENT high-water mark, which never goes back.
      const revision = source.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'entry_changes'").get() as { seq: number } | undefined;
      await c.query("UPDATE entry_revision SET revision = $1 WHERE id = 1", [revision?.seq ?? 0]);
    });
    return { tables: copied, schemaVersion: KNOWN_SCHEMA_VERSION };
  } catch (cause) {
    if (isHallmarkError(cause)) throw cause;
    throw new HallmarkError("store_copy_failed", `the copy to ${where} failed (nothing was written): ${withoutSecrets((cause as Error).message, target)}`, { cause });
  } finally {
    if (source.inTransaction) source.exec("ROLLBACK");
    source.close();
    await pool.end().catch(() => undefined);
  }
}

/** What an empty target holds in each table: nothing, or the singleton rows at their initial values. */
function emptyTargetRow(table: string): string {
  if (table === "bundle_state") return "sequence = 0";
  if (table === "tlog_state") return "integrated_size = 0 AND checkpoint IS NULL";
  if (table === "entry_revision") return "revision = 0";
  return "false";
}
