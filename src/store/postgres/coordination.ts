import { createHash } from "node:crypto";
import pg from "pg";
import type { Logger } from "pino";
import { ChangeFeed } from "../change-feed.js";
import type { ChangeTopic, StoreCoordination } from "../types.js";
import type { PostgresConnectionOptions } from "./connection.js";

/** The one channel every replica LISTENs on; the payload names the topic. */
export const CHANGE_CHANNEL = "hallmark_changes";
const TOPICS: readonly ChangeTopic[] = ["entries", "caKeys"];
/** How long to wait before listening again after the listening connection was lost. */
const RELISTEN_MS = 1000;

/** The statement a writing transaction runs to announce its change: delivered at commit, dropped on rollback. */
export const NOTIFY_SQL = `SELECT pg_notify('${CHANGE_CHANNEL}', $1)`;

/**
 * The advisory lock key of a named lock: the first 8 bytes of SHA-256("hallmark:" + name) as a
 * signed bigint, so names never collide with the fixed keys of the migration and audit locks.
 */
export function advisoryLockKey(name: string): string {
  return createHash("sha256").update(`hallmark:${name}`).digest().readBigInt64BE(0).toString();
}

/**
 * Cross-replica coordination on PostgreSQL. Notices: one dedicated connection (outside the pool,
 * so a busy pool never delays a notice) LISTENs on CHANGE_CHANNEL; writers NOTIFY in the same
 * transaction as their change, so a notice means a committed change. When that connection is
 * lost (a restart, a failover) it listens again every second, and tells every topic's listeners
 * once it is back, since notices sent meanwhile are gone. Locks: a session advisory lock held on
 * one pool connection for the length of the body; if that connection dies the server releases
 * the lock, so a killed replica never leaves it held.
 */
export class PgCoordination implements StoreCoordination {
  private readonly feed = new ChangeFeed();
  private client: pg.Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private lost = false;

  constructor(
    private readonly o: PostgresConnectionOptions,
    private readonly locks: { exclusively<T>(name: string, body: () => Promise<T>): Promise<T> },
    private readonly log: Logger | undefined,
    private readonly scrub: (message: string) => string,
  ) {}

  onChange(topic: ChangeTopic, listener: () => void): () => void {
    return this.feed.on(topic, listener);
  }

  exclusively<T>(name: string, body: () => Promise<T>): Promise<T> {
    return this.locks.exclusively(name, body);
  }

  /** Starts listening; a database that does not answer now is tried again every second. */
  async listen(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({
      connectionString: this.o.url,
      ...(this.o.password !== undefined ? { password: this.o.password } : {}),
      connectionTimeoutMillis: this.o.pool.connectionTimeout * 1000,
      application_name: "hallmark-listen",
      keepAlive: true,
    });
    client.on("notification", (n) => {
      if (n.channel === CHANGE_CHANNEL && TOPICS.includes(n.payload as ChangeTopic)) this.feed.emit(n.payload as ChangeTopic);
    });
    client.on("error", (e) => this.lose(client, e));
    client.on("end", () => this.lose(client, undefined));
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANGE_CHANNEL}`);
    } catch (e) {
      this.lose(client, e);
      return;
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    if (this.lost) {
      this.lost = false;
      this.log?.info("change notices heard again");
      for (const t of TOPICS) this.feed.emit(t);
    }
  }

  private lose(client: pg.Client, e: unknown): void {
    if (this.client === client) this.client = undefined;
    client.removeAllListeners("end");
    client.on("error", () => undefined);
    client.end().catch(() => undefined);
    if (this.closed || this.timer) return;
    if (!this.lost) {
      this.lost = true;
      // Once per outage, without a stack: the store's health line says what is wrong with the database.
      this.log?.warn({ detail: e instanceof Error ? this.scrub(e.message) : "connection ended" }, "change notices not heard: listening again every second");
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.listen();
    }, RELISTEN_MS);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const c = this.client;
    this.client = undefined;
    if (c) {
      c.removeAllListeners("end");
      c.on("error", () => undefined);
      await c.end().catch(() => undefined);
    }
  }
}

/** Named advisory locks on the pool: wrapped by the health guard like a repository. */
export class PgLocks {
  constructor(private readonly pool: pg.Pool) {}

  async exclusively<T>(name: string, body: () => Promise<T>): Promise<T> {
    const key = advisoryLockKey(name);
    const c = await this.pool.connect();
    let locked = false;
    let broken = false;
    try {
      await c.query("SELECT pg_advisory_lock($1)", [key]);
      locked = true;
      return await body();
    } finally {
      // A connection that cannot unlock (or never locked) is dropped: the server releases a session's locks when it ends.
      if (locked) await c.query("SELECT pg_advisory_unlock($1)", [key]).catch(() => (broken = true));
      c.release(broken || !locked);
    }
  }
}
