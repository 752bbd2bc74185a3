import type pg from "pg";
import type { Logger } from "pino";
import { HallmarkError, isHallmarkError } from "../../errors.js";
import type {
  AccessTokenRepository,
  AuditRepository,
  CaKeyRepository,
  DelegationRepository,
  DpopProofRepository,
  EntryRepository,
  FederationRepository,
  JoinTokenRepository,
  NodeRepository,
  SessionRepository,
  Store,
  SvidRepository,
  TransparencyRepository,
} from "../types.js";
import { type PostgresConnectionOptions, createPool, redactUrl, withoutSecrets } from "./connection.js";
import { PostgresHealth } from "./health.js";
import { PgCoordination, PgLocks } from "./coordination.js";
import {
  PgAccessTokens,
  PgAudit,
  PgCaKeys,
  PgDelegations,
  PgDpopProofs,
  PgEntries,
  PgFederations,
  PgJoinTokens,
  PgNodes,
  PgSessions,
  PgSvids,
  PgTransparency,
} from "./repositories.js";
import { refuseNewerSchema, refuseOlderSchema } from "../sqlite/schema.js";
import { migratePostgresSchema, readPostgresSchemaVersion } from "./schema.js";

export interface PostgresStoreOptions extends PostgresConnectionOptions {
  /** Apply pending migrations (default true); false refuses a schema behind this build (store_schema_behind). */
  migrate?: boolean | undefined;
  log?: Logger | undefined;
}

/**
 * Opens the PostgreSQL datastore at `url`: connects (a database that does not answer is refused
 * as datastore_open_failed, the url shown without its password), refuses a schema from a newer
 * Hallmark (store_too_new), then migrates under the migration lock, or with `migrate: false`
 * refuses a schema that is behind. Read-only stores neither migrate nor write.
 */
export async function openPostgresStore(o: PostgresStoreOptions): Promise<Store> {
  const where = redactUrl(o.url);
  const pool = createPool(o);
  // Until the health tracker listens: an idle connection dropped during the open must not end the process.
  const early = (): void => {};
  pool.on("error", early);
  try {
    const version = await readPostgresSchemaVersion(pool);
    refuseNewerSchema(where, version);
    if (o.readonly || o.migrate === false) {
      if (o.readonly && version === 0) throw new HallmarkError("unavailable", `${where} holds no Hallmark schema`);
      refuseOlderSchema(where, version);
    } else {
      const m = await migratePostgresSchema(pool, where);
      if (m.from !== m.to) o.log?.info({ url: where, from: m.from, to: m.to }, `database schema migrated from version ${m.from} to ${m.to}`);
    }
  } catch (cause) {
    await pool.end().catch(() => undefined);
    if (isHallmarkError(cause)) throw cause;
    throw new HallmarkError("datastore_open_failed", `cannot open the datastore ${where}: ${withoutSecrets((cause as Error).message, o)}`, { internal: where });
  }
  const scrub = (m: string) => withoutSecrets(m, o);
  const health = new PostgresHealth(pool, o.log, scrub);
  pool.off("error", early);
  // Read-only stores (the audit worker, the CLI) neither take locks nor wait for notices.
  const coordination = new PgCoordination(o, health.guard("locks", new PgLocks(pool)), o.log, scrub);
  if (!o.readonly) await coordination.listen();
  return new PostgresStore(pool, health, coordination);
}

class PostgresStore implements Store {
  readonly nodes: NodeRepository;
  readonly entries: EntryRepository;
  readonly joinTokens: JoinTokenRepository;
  readonly sessions: SessionRepository;
  readonly svids: SvidRepository;
  readonly caKeys: CaKeyRepository;
  readonly accessTokens: AccessTokenRepository;
  readonly audit: AuditRepository;
  readonly dpopProofs: DpopProofRepository;
  readonly delegations: DelegationRepository;
  readonly federations: FederationRepository;
  readonly transparency: TransparencyRepository;
  private closed = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly health: PostgresHealth,
    readonly coordination: PgCoordination,
  ) {
    this.nodes = health.guard("nodes", new PgNodes(pool));
    this.entries = health.guard("entries", new PgEntries(pool));
    this.joinTokens = health.guard("joinTokens", new PgJoinTokens(pool));
    this.sessions = health.guard("sessions", new PgSessions(pool));
    this.svids = health.guard("svids", new PgSvids(pool));
    this.caKeys = health.guard("caKeys", new PgCaKeys(pool));
    this.accessTokens = health.guard("accessTokens", new PgAccessTokens(pool));
    this.audit = health.guard("audit", new PgAudit(pool));
    this.dpopProofs = health.guard("dpopProofs", new PgDpopProofs(pool));
    this.delegations = health.guard("delegations", new PgDelegations(pool));
    this.federations = health.guard("federations", new PgFederations(pool));
    this.transparency = health.guard("transparency", new PgTransparency(pool));
  }

  healthy(): boolean {
    return !this.closed && this.health.healthy();
  }

  /** PostgreSQL is backed up with its own tools, consistent and online: pg_dump (or base backups and WAL archiving). */
  async backup(): Promise<void> {
    throw new HallmarkError("backup_unsupported", "the datastore is PostgreSQL: back it up with pg_dump (or your base backups and WAL archiving), not hallmark backup");
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.coordination.close();
    await this.pool.end();
  }
}
