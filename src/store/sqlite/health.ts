import type Database from "better-sqlite3";
import { statfsSync } from "node:fs";
import { dirname } from "node:path";
import type { Logger } from "pino";
import { HallmarkError, isHallmarkError } from "../../errors.js";
import { guardRepository } from "../guard.js";

/**
 * SQLite result codes (primary codes; better-sqlite3 reports extended ones such as
 * SQLITE_IOERR_WRITE) that say the datastore cannot be used, whatever the request was: disk full,
 * I/O errors, a read-only or vanished file, a lock held past busy_timeout, corruption.
 * Constraint violations are not among them: those are about the request.
 */
const STORAGE_FAILURES = [
  "SQLITE_FULL",
  "SQLITE_IOERR",
  "SQLITE_READONLY",
  "SQLITE_BUSY",
  "SQLITE_LOCKED",
  "SQLITE_CANTOPEN",
  "SQLITE_CORRUPT",
  "SQLITE_NOTADB",
  "SQLITE_NOMEM",
  "SQLITE_NOLFS",
  "SQLITE_PROTOCOL",
] as const;

export function sqliteFailureCode(e: unknown): string | undefined {
  const code = typeof e === "object" && e !== null ? (e as { code?: unknown }).code : undefined;
  if (typeof code !== "string") return undefined;
  return STORAGE_FAILURES.some((p) => code === p || code.startsWith(`${p}_`)) ? code : undefined;
}

/** How often, at most, readiness checks retry a write while the store is failing. */
const PROBE_INTERVAL_MS = 1000;
/**
 * After SQLITE_FULL, the free space the filesystem must report before a retry is worth trying.
 * A one-page probe write can still fit in the slack of a full disk where real writes (several
 * pages, WAL growth) do not; without this margin readiness would flap while the disk is full.
 */
const MIN_FREE_BYTES_AFTER_FULL = 1 << 20;

/**
 * Whether the datastore takes writes, learnt from the writes themselves. A storage failure from
 * any repository call marks it failing and becomes a HallmarkError `store_unavailable`, so
 * services and the API never see a raw SqliteError; the next call that commits a change marks
 * it healthy again. Transitions are logged once each, without stacks: during an outage every
 * request fails the same way, and the count is reported when it ends.
 */
export class SqliteHealth {
  private failing = false;
  private lastCode = "";
  /** total_changes() when the last failure happened: a later increase is a committed write. */
  private changesAtFailure = 0;
  private failures = 0;
  private lastProbe = 0;

  constructor(
    private readonly db: Database.Database,
    private readonly log: Logger | undefined,
  ) {}

  /**
   * False while writes fail. Retries a harmless real write now and then, so that a server that
   * readiness checks took out of rotation (and so gets no writes) can come back by itself.
   */
  healthy(): boolean {
    if (this.failing && Date.now() - this.lastProbe >= PROBE_INTERVAL_MS) {
      this.lastProbe = Date.now();
      this.probe();
    }
    return !this.failing;
  }

  private probe(): void {
    if (!this.db.open) return;
    if (this.lastCode.startsWith("SQLITE_FULL") && this.freeBytes() < MIN_FREE_BYTES_AFTER_FULL) return;
    try {
      this.db.prepare("UPDATE schema_version SET version = version").run();
    } catch (e) {
      this.failed(e, "store.probe");
      return;
    }
    this.recovered("store.probe");
  }

  /** Free space where the database lives; Infinity when that cannot be told (in memory). */
  private freeBytes(): number {
    if (this.db.memory) return Infinity;
    try {
      const fs = statfsSync(dirname(this.db.name));
      return fs.bavail * fs.bsize;
    } catch {
      return Infinity;
    }
  }

  /** The repository with every method run through `call`, named `name.method` in the log. */
  guard<T extends object>(name: string, repo: T): T {
    return guardRepository(name, repo, (op, run) => this.call(op, run));
  }

  private async call<R>(op: string, run: () => R | Promise<R>): Promise<R> {
    let result: R;
    try {
      result = await run();
    } catch (e) {
      throw this.failed(e, op);
    }
    if (this.failing && this.totalChanges() > this.changesAtFailure) this.recovered(op);
    return result;
  }

  private failed(e: unknown, op: string): unknown {
    const code = sqliteFailureCode(e);
    if (isHallmarkError(e) || code === undefined) return e;
    this.failures += 1;
    this.lastCode = code;
    this.changesAtFailure = this.totalChanges();
    if (!this.failing) {
      this.failing = true;
      this.lastProbe = Date.now();
      this.log?.error({ sqlite: code, op, detail: (e as Error).message }, "datastore failing: requests answer 503 store_unavailable and /readyz is not ready until a write succeeds");
    }
    return new HallmarkError("store_unavailable", "the datastore is unavailable", { cause: e, internal: `${code} during ${op}` });
  }

  private recovered(op: string): void {
    this.log?.info({ op, failedCalls: this.failures }, "datastore writes succeed again");
    this.failing = false;
    this.failures = 0;
  }

  private totalChanges(): number {
    try {
      return this.db.open ? Number(this.db.prepare("SELECT total_changes() AS n").pluck().get()) : 0;
    } catch {
      return 0;
    }
  }
}
