import type pg from "pg";
import type { Logger } from "pino";
import { HallmarkError, isHallmarkError } from "../../errors.js";
import { guardRepository } from "../guard.js";

/**
 * SQLSTATE classes and codes that say the database cannot be used, whatever the request was
 * (PostgreSQL manual, appendix A): connection exceptions (08), an administrator or crash shutdown
 * and a server still starting (57P01-57P03), insufficient resources (53), system errors (58), a
 * read-only transaction where a write was asked (25006: a standby, or a primary demoted under
 * us), and a statement cancelled by statement_timeout (57014). Constraint violations are about the
 * request and are not among them.
 */
const SQLSTATE_FAILURES = [/^08/, /^57P0[123]$/, /^53/, /^58/, /^25006$/, /^57014$/];
/** Socket errors of the client (node-postgres passes them through with their errno code). */
const ERRNO_FAILURES = new Set(["ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "ENOENT"]);
/** node-postgres's own words for a connection lost, refused within connectionTimeout, or closed. */
const MESSAGE_FAILURES = /Connection terminated|timeout exceeded when trying to connect|not queryable|Client was closed|Cannot use a pool after calling end/i;

/** Why `e` means the database is unreachable or unusable (a short code for the log), or undefined. */
export function postgresFailureCode(e: unknown): string | undefined {
  if (typeof e !== "object" || e === null) return undefined;
  const code = (e as { code?: unknown }).code;
  if (typeof code === "string") {
    if (/^[0-9A-Z]{5}$/.test(code) && SQLSTATE_FAILURES.some((p) => p.test(code))) return code;
    if (ERRNO_FAILURES.has(code)) return code;
  }
  if (e instanceof Error && MESSAGE_FAILURES.test(e.message)) return "connection_lost";
  return undefined;
}

/** How often, at most, a readiness check asks the database whether it answers. */
const PROBE_INTERVAL_MS = 1000;

/**
 * Whether the database answers, learnt from every call and from a `SELECT 1` that readiness
 * checks start at most once a second (in the background: healthy() stays synchronous and answers
 * from the last thing learnt). A failure of the database becomes HallmarkError store_unavailable
 * here, so nothing above the store sees a driver error; the first call or probe that succeeds
 * afterwards makes it healthy again: a restarted database is used again without a restart of ours.
 */
export class PostgresHealth {
  private failing = false;
  private failures = 0;
  private lastProbe = 0;
  private probing = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger | undefined,
    private readonly scrub: (message: string) => string,
  ) {
    // An idle connection the server closed (restart, failover) is reported here; without a
    // listener the pool's error event would end the process.
    pool.on("error", (e) => void this.failed(e, "pool.idle"));
  }

  healthy(): boolean {
    if (!this.probing && Date.now() - this.lastProbe >= PROBE_INTERVAL_MS) {
      this.lastProbe = Date.now();
      this.probing = true;
      this.pool
        .query("SELECT 1")
        .then(
          () => this.recovered("store.probe"),
          (e: unknown) => void this.failed(e, "store.probe"),
        )
        .finally(() => (this.probing = false));
    }
    return !this.failing;
  }

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
    this.recovered(op);
    return result;
  }

  private failed(e: unknown, op: string): unknown {
    const code = postgresFailureCode(e);
    if (isHallmarkError(e) || code === undefined) return e;
    this.failures += 1;
    if (!this.failing) {
      this.failing = true;
      this.log?.error({ postgres: code, op, detail: this.scrub((e as Error).message) }, "datastore unreachable: requests answer 503 store_unavailable and /readyz is not ready until it answers again");
    }
    return new HallmarkError("store_unavailable", "the datastore is unavailable", { cause: e, internal: `${code} during ${op}` });
  }

  private recovered(op: string): void {
    if (!this.failing) return;
    this.log?.info({ op, failedCalls: this.failures }, "datastore answers again");
    this.failing = false;
    this.failures = 0;
  }
}
