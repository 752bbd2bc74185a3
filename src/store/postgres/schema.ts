import type pg from "pg";
import { KNOWN_SCHEMA_VERSION, refuseNewerSchema } from "../sqlite/schema.js";
import { type Queryable, inTransaction } from "./connection.js";
import { POSTGRES_MIGRATIONS } from "./migrations.js";

// Both engines count versions the same way: `store copy` and version checks line up.
if (POSTGRES_MIGRATIONS.length !== KNOWN_SCHEMA_VERSION) {
  throw new Error(`PostgreSQL migrations (${POSTGRES_MIGRATIONS.length}) and SQLite migrations (${KNOWN_SCHEMA_VERSION}) differ in number`);
}

/**
 * The advisory lock key of schema changes ("hallmark" in ASCII, as a bigint): every replica and
 * `hallmark store migrate` takes it for each migration, so that replicas starting together
 * migrate one after the other and never twice, and never deadlock on each other's DDL.
 */
const MIGRATION_LOCK = 0x68616c6c6d61726bn;

export async function readPostgresSchemaVersion(db: Queryable): Promise<number> {
  const t = await db.query("SELECT to_regclass('schema_version') IS NOT NULL AS present");
  if (!(t.rows[0] as { present: boolean }).present) return 0;
  const r = await db.query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version");
  return Number((r.rows[0] as { v: unknown }).v);
}

/**
 * Brings the schema to KNOWN_SCHEMA_VERSION, one migration per transaction: each takes the
 * migration lock (released at its commit), reads the version again under it, and applies the next
 * migration only if nobody did meanwhile. DDL is transactional in PostgreSQL, so a crash leaves
 * the database at a version boundary. Returns the versions before and after.
 */
export async function migratePostgresSchema(pool: pg.Pool, where: string): Promise<{ from: number; to: number }> {
  let from: number | undefined;
  for (;;) {
    const applied = await inTransaction(pool, async (c) => {
      // A migration (or the wait for another replica's) may take longer than a request may.
      await c.query("SET LOCAL statement_timeout = 0");
      await c.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK.toString()]);
      await c.query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
      const version = await readPostgresSchemaVersion(c);
      from ??= version;
      refuseNewerSchema(where, version);
      if (version >= KNOWN_SCHEMA_VERSION) return false;
      await c.query(POSTGRES_MIGRATIONS[version]!);
      await c.query("INSERT INTO schema_version (version) VALUES ($1)", [version + 1]);
      return true;
    });
    if (!applied) return { from: from ?? KNOWN_SCHEMA_VERSION, to: KNOWN_SCHEMA_VERSION };
  }
}
