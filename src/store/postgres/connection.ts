import pg from "pg";

/** What the PostgreSQL store needs to connect; `password` overrides one in the url. */
export interface PostgresConnectionOptions {
  url: string;
  password?: string | undefined;
  pool: { max: number; connectionTimeout: number; idleTimeout: number; statementTimeout: number };
  /** Every transaction read-only (the audit verification worker, forensics). */
  readonly?: boolean | undefined;
}

export type Queryable = pg.Pool | pg.PoolClient;

/** The url with any password replaced: what error messages and logs may name. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    // Not parseable: the part before '@' may be user:password; never show it.
    return url.replace(/\/\/[^@/]*@/, "//***@");
  }
}

/**
 * A message with the password, and the url's password, taken out: node-postgres and the server
 * word their errors as they like, and a secret must not reach a log line through them.
 */
export function withoutSecrets(message: string, o: Pick<PostgresConnectionOptions, "url" | "password">): string {
  const secrets = [o.password, passwordOf(o.url)].filter((s): s is string => typeof s === "string" && s.length > 0);
  let m = message.split(o.url).join(redactUrl(o.url));
  for (const s of secrets) m = m.split(s).join("***");
  return m;
}

function passwordOf(url: string): string | undefined {
  try {
    const p = new URL(url).password;
    return p ? decodeURIComponent(p) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One pool per store (per server replica). bigint columns come back as strings, which the row
 * mappers turn into numbers (times in milliseconds and sequence numbers stay far below 2^53).
 */
export function createPool(o: PostgresConnectionOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: o.url,
    ...(o.password !== undefined ? { password: o.password } : {}),
    max: o.pool.max,
    connectionTimeoutMillis: o.pool.connectionTimeout * 1000,
    idleTimeoutMillis: o.pool.idleTimeout * 1000,
    statement_timeout: o.pool.statementTimeout * 1000,
    application_name: "hallmark",
    ...(o.readonly ? { options: "-c default_transaction_read_only=on" } : {}),
  });
  // node-postgres emits 'error' on a client whose connection ends unexpectedly, and the pool
  // listens only while the client is idle: a client checked out between two statements of a
  // transaction (or holding an advisory lock) when the database went away would end the process.
  // Its next query fails anyway (becoming store_unavailable), and the pool drops it on release.
  pool.on("connect", (client) => client.on("error", () => undefined));
  return pool;
}

/**
 * Runs `body` in one transaction on one connection of the pool: committed when it returns,
 * rolled back when it throws. A connection whose rollback fails is dropped, not reused.
 */
export async function inTransaction<T>(
  pool: pg.Pool,
  body: (c: pg.PoolClient) => Promise<T>,
  mode = "BEGIN",
): Promise<T> {
  const c = await pool.connect();
  let broken = false;
  try {
    await c.query(mode);
    const result = await body(c);
    await c.query("COMMIT");
    return result;
  } catch (e) {
    await c.query("ROLLBACK").catch(() => (broken = true));
    throw e;
  } finally {
    c.release(broken);
  }
}

/** SQLSTATE 23505: a unique constraint refused the row. */
export function isUniqueViolation(e: unknown): boolean {
  return typeof e === "object" && e !== null && (e as { code?: unknown }).code === "23505";
}
