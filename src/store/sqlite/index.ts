import Database from "better-sqlite3";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type { Logger } from "pino";
import type { JsonObject } from "../../attestors/types.js";
import {
  AUDIT_COLUMNS,
  type Row,
  STATUS_TIME_COLUMN,
  SVID_COLUMNS,
  accessTokenOf,
  auditFromRow,
  auditRowValues,
  banFromRow,
  caKeyFromRow,
  date,
  delegationFromRow,
  entryFromRow,
  federationFromRow,
  federationParams,
  json,
  ms,
  nodeFromRow,
  optDate,
  sessionFromRow,
  svidFromRow,
  tokenFromRow,
  svidRowValues,
  upstreamChainColumn,
} from "../rows.js";
import { HallmarkError } from "../../errors.js";
import { type SchemaOptions, backupDatabase, migrateSchema, readSchemaVersion, refuseNewerSchema, refuseOlderSchema } from "./schema.js";
import { errnoReason } from "../../system-error.js";
import { SqliteHealth } from "./health.js";
import { type ProcessCoordination, announcingWrites, singleProcessCoordination } from "../change-feed.js";
import { databaseFileObstacle, ensurePrivateDatabaseFile } from "./files.js";
import {
  type AccessTokenRecord,
  type AccessTokenRepository,
  AUDIT_GENESIS_HASH,
  MAX_LINEAGE_LINKS,
  type AttestationSessionRecord,
  type AuditAppend,
  type AuditHasher,
  type AuditRecord,
  type AuditRepository,
  type CaKeyKind,
  type CaKeyRecord,
  type CaKeyRepository,
  type CaKeyStatus,
  type ConsumeOutcome,
  type StoreCoordination,
  type DpopProofRepository,
  type DelegationRecord,
  type DelegationRepository,
  type EntryChange,
  type EntryChangePage,
  type EntryRecord,
  type EntryRepository,
  type FederationRecord,
  type FederationRefreshRecord,
  type FederationRepository,
  type IssuedSvidRecord,
  type JoinTokenRecord,
  type JoinTokenRepository,
  type NodeBanRecord,
  type NodeRecord,
  type NodeRepository,
  type SessionRepository,
  type SessionStatus,
  type Store,
  type SvidRepository,
  type TlogSignedCheckpoint,
  type TlogState,
  type TlogStoredHash,
  type TransparencyRepository,
} from "../types.js";

/** Kept here too for the importers of the SQLite store; it lives with the interface. */
export { AUDIT_GENESIS_HASH };

type Db = Database.Database;

const statements = new WeakMap<Db, Map<string, Database.Statement>>();

/** Statements are compiled once per database: preparing costs more than running on the hot path. */
function prepared(db: Db, sql: string): Database.Statement {
  let cache = statements.get(db);
  if (!cache) statements.set(db, (cache = new Map()));
  let st = cache.get(sql);
  if (!st) cache.set(sql, (st = db.prepare(sql)));
  return st;
}

export interface SqliteStoreOptions extends SchemaOptions {
  /**
   * Opens an existing database for reading only, beside a running server or with it stopped
   * (forensics): the file is opened read-only, so nothing can change it: no migration, no
   * journal-mode switch, no checkpoint. A database from a newer Hallmark is refused.
   */
  readonly?: boolean;
  /** Hears when the datastore starts failing (disk full, I/O errors) and when it recovers, and the schema migrations of a start. */
  log?: Logger | undefined;
  /** Apply pending migrations (default true); false refuses a schema behind this build (store_schema_behind). */
  migrate?: boolean | undefined;
  /**
   * Who hears this process's committed writes and whom the locks hold against: by default this
   * process alone; the processes of a `server.workers` group pass one that reaches all of them.
   */
  coordination?: ProcessCoordination | undefined;
}

/**
 * Opens (creating if needed) the embedded SQLite datastore at `path` (":memory:" for a
 * throwaway one), in WAL mode, and applies pending migrations (sqlite-schema.ts: a database from
 * a newer Hallmark is refused before anything is written to it, store_too_new, and an existing
 * one is copied to `<path>.pre-v<N>` before it is migrated). The database and its WAL and
 * shared-memory files are 0600 from the moment they exist. A database that cannot be used is
 * refused in one line naming the file and the reason. `log` hears when the datastore starts
 * failing (disk full, I/O errors) and when it recovers.
 */
export async function openSqliteStore(path: string, options: SqliteStoreOptions = {}): Promise<Store> {
  if (options.readonly) {
    const ro = openReadOnly(path);
    return new SqliteStore(ro, new SqliteHealth(ro, options.log), options.coordination);
  }
  let db: Db | undefined;
  try {
    if (path !== ":memory:") {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      const obstacle = databaseFileObstacle(path);
      if (obstacle) throw datastoreOpenError(path, obstacle);
      ensurePrivateDatabaseFile(path);
    }
    db = new Database(path);
    // Several server replicas or CLI processes may share one file: wait rather than fail.
    db.pragma("busy_timeout = 5000");
    // Before anything is written (the journal mode is): a newer database is left as it was.
    refuseNewerSchema(path, readSchemaVersion(db));
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    db.pragma("foreign_keys = ON");
    if (options.migrate === false) refuseOlderSchema(path, readSchemaVersion(db));
    else await migrateSchema(db, path, options);
    return new SqliteStore(db, new SqliteHealth(db, options.log), options.coordination);
  } catch (cause) {
    if (db?.open) db.close();
    if (cause instanceof HallmarkError) throw cause;
    // SQLite's own words are precise for content ("file is not a database", "database disk
    // image is malformed"); for the rest the errno says more.
    const code = String((cause as { code?: unknown }).code ?? "");
    const reason = code.startsWith("SQLITE_") ? (cause as Error).message : errnoReason(cause);
    throw datastoreOpenError(path, reason, cause);
  }
}

function datastoreOpenError(path: string, reason: string, cause?: unknown): HallmarkError {
  return new HallmarkError("datastore_open_failed", `cannot open the datastore ${path}: ${reason}`, { cause });
}

/**
 * SQLite's read-only open of a WAL database reads the WAL too (what a running or crashed server
 * has not checkpointed yet) and never checkpoints: only the WAL index files beside it (-shm, an
 * empty -wal) may be created when absent, never the database file itself.
 */
function openReadOnly(path: string): Db {
  let db: Db | undefined;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
    db.pragma("busy_timeout = 5000");
    const version = readSchemaVersion(db);
    if (version === 0) throw new Error("it has no schema version");
    refuseNewerSchema(path, version);
    return db;
  } catch (cause) {
    if (db?.open) db.close();
    if (cause instanceof HallmarkError) throw cause;
    throw new HallmarkError("unavailable", `${path} cannot be opened read-only as a Hallmark database: ${(cause as Error).message}`, { cause, internal: path });
  }
}

class SqliteStore implements Store {
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
  readonly coordination: StoreCoordination;

  // Every repository call goes through the health guard: storage failures become
  // store_unavailable in this one place, and mark the store not ready until a write succeeds.
  constructor(
    private readonly db: Db,
    private readonly health: SqliteHealth,
    coordination: ProcessCoordination = singleProcessCoordination(),
  ) {
    this.nodes = health.guard("nodes", new SqliteNodes(db));
    this.coordination = coordination;
    // Writes are announced once committed (long polls wake on them): SQLite sends no notices itself.
    this.entries = announcingWrites(health.guard("entries", new SqliteEntries(db)), ["create", "delete"], () => coordination.announce("entries"));
    this.joinTokens = health.guard("joinTokens", new SqliteJoinTokens(db));
    this.sessions = health.guard("sessions", new SqliteSessions(db));
    this.svids = health.guard("svids", new SqliteSvids(db));
    this.caKeys = announcingWrites(health.guard("caKeys", new SqliteCaKeys(db)), ["bumpBundleSequence"], () => coordination.announce("caKeys"));
    this.accessTokens = health.guard("accessTokens", new SqliteAccessTokens(db));
    this.audit = health.guard("audit", new SqliteAudit(db));
    this.dpopProofs = health.guard("dpopProofs", new SqliteDpopProofs(db));
    this.delegations = health.guard("delegations", new SqliteDelegations(db));
    this.federations = health.guard("federations", new SqliteFederations(db));
    this.transparency = health.guard("transparency", new SqliteTransparency(db));
  }

  healthy(): boolean {
    return this.health.healthy();
  }

  backup(path: string): Promise<void> {
    return backupDatabase(this.db, path);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

class SqliteNodes implements NodeRepository {
  constructor(private readonly db: Db) {}

  async get(spiffeId: string): Promise<NodeRecord | undefined> {
    const row = prepared(this.db, "SELECT * FROM nodes WHERE spiffe_id = ?").get(spiffeId) as Row | undefined;
    return row && nodeFromRow(row);
  }

  async upsert(n: NodeRecord): Promise<void> {
    prepared(
        this.db,
        `INSERT INTO nodes (spiffe_id, attestor_type, hardware_id, selectors, can_reattest, serial, expires_at,
           previous_serial, previous_valid_until, evicted, evicted_at, created_at, updated_at)
         VALUES (@spiffeId, @attestorType, @hardwareId, @selectors, @canReattest, @serial, @expiresAt,
           @previousSerial, @previousValidUntil, @evicted, @evictedAt, @createdAt, @updatedAt)
         ON CONFLICT (spiffe_id) DO UPDATE SET attestor_type = excluded.attestor_type, hardware_id = excluded.hardware_id,
           selectors = excluded.selectors, can_reattest = excluded.can_reattest, serial = excluded.serial,
           expires_at = excluded.expires_at, previous_serial = excluded.previous_serial,
           previous_valid_until = excluded.previous_valid_until, evicted = excluded.evicted,
           evicted_at = excluded.evicted_at, updated_at = excluded.updated_at`,
      )
      .run({
        spiffeId: n.spiffeId,
        attestorType: n.attestorType,
        hardwareId: n.hardwareId ?? null,
        selectors: JSON.stringify(n.selectors),
        canReattest: n.canReattest ? 1 : 0,
        serial: n.serial ?? null,
        expiresAt: n.expiresAt ? ms(n.expiresAt) : null,
        previousSerial: n.previousSerial ?? null,
        previousValidUntil: n.previousValidUntil ? ms(n.previousValidUntil) : null,
        evicted: n.evicted ? 1 : 0,
        evictedAt: n.evictedAt ? ms(n.evictedAt) : null,
        createdAt: ms(n.createdAt),
        updatedAt: ms(n.updatedAt),
      });
  }

  async list(): Promise<NodeRecord[]> {
    return (prepared(this.db, "SELECT * FROM nodes ORDER BY spiffe_id").all() as Row[]).map(nodeFromRow);
  }

  async evict(spiffeId: string, at: Date): Promise<boolean> {
    const r = prepared(
      this.db,
      `UPDATE nodes SET evicted = 1, evicted_at = @at, previous_serial = NULL, previous_valid_until = NULL, updated_at = @at
       WHERE spiffe_id = @spiffeId`,
    ).run({ at: ms(at), spiffeId });
    return r.changes > 0;
  }

  async delete(spiffeId: string): Promise<boolean> {
    return prepared(this.db, "DELETE FROM nodes WHERE spiffe_id = ?").run(spiffeId).changes > 0;
  }

  async ban(b: NodeBanRecord): Promise<void> {
    prepared(
      this.db,
      `INSERT INTO node_bans (spiffe_id, attestor_type, hardware_id, created_at) VALUES (@spiffeId, @attestorType, @hardwareId, @createdAt)
       ON CONFLICT (spiffe_id) DO UPDATE SET attestor_type = excluded.attestor_type, hardware_id = excluded.hardware_id,
         created_at = excluded.created_at`,
    ).run({ spiffeId: b.spiffeId, attestorType: b.attestorType, hardwareId: b.hardwareId ?? null, createdAt: ms(b.createdAt) });
  }

  async unban(spiffeId: string): Promise<boolean> {
    return prepared(this.db, "DELETE FROM node_bans WHERE spiffe_id = ?").run(spiffeId).changes > 0;
  }

  async findBan(spiffeId: string, attestorType: string, hardwareId: string | undefined): Promise<NodeBanRecord | undefined> {
    const row = prepared(
      this.db,
      `SELECT * FROM node_bans WHERE spiffe_id = @spiffeId
         OR (@hardwareId IS NOT NULL AND attestor_type = @attestorType AND hardware_id = @hardwareId) LIMIT 1`,
    ).get({ spiffeId, attestorType, hardwareId: hardwareId ?? null }) as Row | undefined;
    return row && banFromRow(row);
  }

  async listBans(): Promise<NodeBanRecord[]> {
    return (prepared(this.db, "SELECT * FROM node_bans ORDER BY spiffe_id").all() as Row[]).map(banFromRow);
  }
}



class SqliteEntries implements EntryRepository {
  constructor(private readonly db: Db) {}

  async create(e: EntryRecord): Promise<void> {
    const selectors = JSON.stringify([...e.selectors].sort());
    try {
      this.db.transaction(() => {
        prepared(
          this.db,
          `INSERT INTO entries (id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, dns_names, admin, hint, federates_with, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(
          e.id,
          e.spiffeId,
          e.parentId,
          selectors,
          e.x509SvidTtlSeconds ?? null,
          e.jwtSvidTtlSeconds ?? null,
          JSON.stringify(e.dnsNames),
          e.admin ? 1 : 0,
          e.hint ?? "",
          JSON.stringify(e.federatesWith ?? []),
          ms(e.createdAt),
        );
        this.logChange(e.id, "created", e.parentId, selectors, e.createdAt);
      })();
    } catch (cause) {
      if (isUniqueViolation(cause)) {
        throw new HallmarkError("entry_exists", "an entry with this SPIFFE ID, parent and selectors exists");
      }
      throw cause;
    }
  }

  private logChange(entryId: string, kind: EntryChange["kind"], parentId: string, selectors: string, at: Date): void {
    prepared(this.db, "INSERT INTO entry_changes (entry_id, kind, parent_id, selectors, changed_at) VALUES (?, ?, ?, ?, ?)")
      .run(entryId, kind, parentId, selectors, ms(at));
  }

  async get(id: string): Promise<EntryRecord | undefined> {
    const row = prepared(this.db, "SELECT * FROM entries WHERE id = ?").get(id) as Row | undefined;
    return row && entryFromRow(row);
  }

  async list(filter: { parentId?: string; spiffeId?: string } = {}): Promise<EntryRecord[]> {
    const where: string[] = [];
    const args: string[] = [];
    if (filter.parentId !== undefined) {
      where.push("parent_id = ?");
      args.push(filter.parentId);
    }
    if (filter.spiffeId !== undefined) {
      where.push("spiffe_id = ?");
      args.push(filter.spiffeId);
    }
    const sql = `SELECT * FROM entries ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY created_at, id`;
    return (prepared(this.db, sql).all(...args) as Row[]).map(entryFromRow);
  }

  async listForSpiffeId(spiffeId: string, parentIds: readonly string[]): Promise<EntryRecord[]> {
    if (parentIds.length === 0) return [];
    const sql = `SELECT * FROM entries WHERE spiffe_id = ? AND parent_id IN (${parentIds.map(() => "?").join(", ")}) ORDER BY created_at, id`;
    return (prepared(this.db, sql).all(spiffeId, ...parentIds) as Row[]).map(entryFromRow);
  }

  async listByParent(parentId: string, afterId: string | undefined, limit: number): Promise<EntryRecord[]> {
    const rows = prepared(this.db, "SELECT * FROM entries WHERE parent_id = ? AND id > ? ORDER BY id LIMIT ?").all(parentId, afterId ?? "", limit) as Row[];
    return rows.map(entryFromRow);
  }

  async delete(id: string, at: Date): Promise<boolean> {
    return this.db.transaction((): boolean => {
      const row = prepared(this.db, "DELETE FROM entries WHERE id = ? RETURNING parent_id, selectors").get(id) as Row | undefined;
      if (!row) return false;
      this.logChange(id, "deleted", String(row.parent_id), String(row.selectors), at);
      return true;
    })();
  }

  async revision(): Promise<number> {
    const row = prepared(this.db, "SELECT seq FROM sqlite_sequence WHERE name = 'entry_changes'").get() as Row | undefined;
    return Number(row?.seq ?? 0);
  }

  async pruneChanges(before: Date): Promise<number> {
    return prepared(this.db, "DELETE FROM entry_changes WHERE changed_at < ?").run(ms(before)).changes;
  }

  async changesSince(revision: number, limit: number): Promise<EntryChangePage | undefined> {
    return this.db.transaction((): EntryChangePage | undefined => {
      const head = Number((prepared(this.db, "SELECT seq FROM sqlite_sequence WHERE name = 'entry_changes'").get() as Row | undefined)?.seq ?? 0);
      const oldest = (prepared(this.db, "SELECT MIN(revision) AS r FROM entry_changes").get() as Row).r;
      // Continuable: within [oldest retained - 1, head]. An empty log continues only from its head.
      const floor = oldest === null || oldest === undefined ? head : Number(oldest) - 1;
      if (!Number.isSafeInteger(revision) || revision < floor || revision > head) return undefined;
      const rows = prepared(
        this.db,
        `SELECT c.revision, c.entry_id, c.kind, c.parent_id AS change_parent, c.selectors AS change_selectors, e.*
         FROM entry_changes c LEFT JOIN entries e ON c.kind = 'created' AND e.id = c.entry_id
         WHERE c.revision > ? ORDER BY c.revision LIMIT ?`,
      ).all(revision, limit) as Row[];
      const changes = rows.map((r): EntryChange => ({
        revision: Number(r.revision),
        kind: r.kind === "deleted" ? "deleted" : "created",
        entryId: String(r.entry_id),
        parentId: String(r.change_parent),
        selectors: json<string[]>(r.change_selectors),
        entry: r.id === null || r.id === undefined ? undefined : entryFromRow(r),
      }));
      const last = changes.at(-1)?.revision ?? head;
      return { changes, revision: last, more: last < head };
    })();
  }
}


class SqliteFederations implements FederationRepository {
  constructor(private readonly db: Db) {}

  async create(f: FederationRecord): Promise<void> {
    try {
      prepared(
        this.db,
        `INSERT INTO federations (trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, web_roots_pem, bundle, bundle_sequence,
           refresh_hint, last_refresh_at, last_outcome, last_error, next_refresh_at, created_at, updated_at)
         VALUES (@trustDomain, @url, @profile, @endpointId, @webRoots, @bundle, @sequence, @hint, @lastAt, @outcome, @error, @nextAt, @createdAt, @updatedAt)`,
      ).run(federationParams(f));
    } catch (cause) {
      if (isUniqueViolation(cause)) throw new HallmarkError("federation_exists", `a federation relationship with ${f.trustDomain} exists already`);
      throw cause;
    }
  }

  async get(trustDomain: string): Promise<FederationRecord | undefined> {
    const row = prepared(this.db, "SELECT * FROM federations WHERE trust_domain = ?").get(trustDomain) as Row | undefined;
    return row && federationFromRow(row);
  }

  async list(): Promise<FederationRecord[]> {
    return (prepared(this.db, "SELECT * FROM federations ORDER BY trust_domain").all() as Row[]).map(federationFromRow);
  }

  async update(f: FederationRecord): Promise<boolean> {
    return (
      prepared(
        this.db,
        `UPDATE federations SET bundle_endpoint_url = @url, profile = @profile, endpoint_spiffe_id = @endpointId, web_roots_pem = @webRoots,
           bundle = @bundle, bundle_sequence = @sequence, refresh_hint = @hint, next_refresh_at = @nextAt, updated_at = @updatedAt
         WHERE trust_domain = @trustDomain`,
      ).run(federationParams(f)).changes > 0
    );
  }

  async delete(trustDomain: string): Promise<boolean> {
    return prepared(this.db, "DELETE FROM federations WHERE trust_domain = ?").run(trustDomain).changes > 0;
  }

  async recordRefresh(trustDomain: string, r: FederationRefreshRecord): Promise<void> {
    const common = { trustDomain, at: ms(r.at), outcome: r.outcome, error: r.error ?? null, nextAt: ms(r.nextRefreshAt) };
    if (r.bundle) {
      prepared(
        this.db,
        `UPDATE federations SET bundle = @bundle, bundle_sequence = @sequence, refresh_hint = @hint, last_refresh_at = @at,
           last_outcome = @outcome, last_error = @error, next_refresh_at = @nextAt, updated_at = @at WHERE trust_domain = @trustDomain`,
      ).run({ ...common, bundle: r.bundle.json, sequence: r.bundle.sequence ?? null, hint: r.bundle.refreshHintSeconds ?? null });
    } else {
      prepared(
        this.db,
        `UPDATE federations SET last_refresh_at = @at, last_outcome = @outcome, last_error = @error, next_refresh_at = @nextAt
         WHERE trust_domain = @trustDomain`,
      ).run(common);
    }
  }

  async due(now: Date): Promise<FederationRecord[]> {
    return (prepared(this.db, "SELECT * FROM federations WHERE next_refresh_at <= ? ORDER BY next_refresh_at").all(ms(now)) as Row[]).map(federationFromRow);
  }
}



function isUniqueViolation(e: unknown): boolean {
  return typeof e === "object" && e !== null && String((e as { code?: unknown }).code).startsWith("SQLITE_CONSTRAINT");
}

class SqliteJoinTokens implements JoinTokenRepository {
  constructor(private readonly db: Db) {}

  async create(t: JoinTokenRecord): Promise<void> {
    prepared(this.db, "INSERT INTO join_tokens (token_hash, spiffe_id, expires_at, used_at, created_at) VALUES (?, ?, ?, NULL, ?)")
      .run(t.tokenHash, t.spiffeId, ms(t.expiresAt), ms(t.createdAt));
  }

  async get(tokenHash: string): Promise<JoinTokenRecord | undefined> {
    const row = prepared(this.db, "SELECT * FROM join_tokens WHERE token_hash = ?").get(tokenHash) as Row | undefined;
    return row && tokenFromRow(row);
  }

  async consume(tokenHash: string, now: Date): Promise<{ outcome: ConsumeOutcome; record?: JoinTokenRecord }> {
    // One statement decides: two racing callers cannot both see the token unused.
    const changed = prepared(this.db, "UPDATE join_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?")
      .run(ms(now), tokenHash, ms(now)).changes;
    const record = await this.get(tokenHash);
    if (changed === 1 && record) return { outcome: "consumed", record };
    if (!record) return { outcome: "not_found" };
    return { outcome: record.usedAt ? "used" : "expired", record };
  }

  async purgeExpired(now: Date): Promise<number> {
    return prepared(this.db, "DELETE FROM join_tokens WHERE expires_at <= ?").run(ms(now)).changes;
  }
}


class SqliteDpopProofs implements DpopProofRepository {
  constructor(private readonly db: Db) {}

  async remember(key: string, until: Date, now: Date): Promise<boolean> {
    // One statement decides (PostgreSQL has the same ON CONFLICT … DO UPDATE … WHERE): a new key
    // is inserted, an expired one taken over, a live one left alone, and `changes` tells which.
    return (
      prepared(this.db, "INSERT INTO dpop_proofs (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE dpop_proofs.expires_at <= ?")
        .run(key, ms(until), ms(now)).changes === 1
    );
  }

  async purgeExpired(now: Date): Promise<number> {
    return prepared(this.db, "DELETE FROM dpop_proofs WHERE expires_at <= ?").run(ms(now)).changes;
  }
}

class SqliteSessions implements SessionRepository {
  constructor(private readonly db: Db) {}

  async create(s: AttestationSessionRecord): Promise<void> {
    prepared(
        this.db,
        `INSERT INTO attestation_sessions (id, attestor_type, nonce, status, bound_spki, state, expires_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        s.id,
        s.attestorType,
        s.nonce,
        s.status,
        s.boundSpki ?? null,
        s.state ? JSON.stringify(s.state) : null,
        ms(s.expiresAt),
        ms(s.createdAt),
      );
  }

  async get(id: string): Promise<AttestationSessionRecord | undefined> {
    const row = prepared(this.db, "SELECT * FROM attestation_sessions WHERE id = ?").get(id) as Row | undefined;
    return row && sessionFromRow(row);
  }

  async transition(
    id: string,
    from: SessionStatus,
    to: SessionStatus,
    now: Date,
    update: { state?: JsonObject | undefined; boundSpki?: Buffer | undefined } = {},
  ): Promise<ConsumeOutcome> {
    const changed = prepared(
        this.db,
        `UPDATE attestation_sessions
           SET status = @to,
               state = CASE WHEN @setState THEN @state ELSE state END,
               bound_spki = COALESCE(@boundSpki, bound_spki)
         WHERE id = @id AND status = @from AND expires_at > @now`,
      )
      .run({
        id,
        from,
        to,
        now: ms(now),
        setState: "state" in update ? 1 : 0,
        state: update.state ? JSON.stringify(update.state) : null,
        boundSpki: update.boundSpki ?? null,
      }).changes;
    if (changed === 1) return "consumed";
    const s = await this.get(id);
    if (!s) return "not_found";
    if (s.status !== from) return "used";
    return "expired";
  }

  async purgeExpired(now: Date): Promise<number> {
    return prepared(this.db, "DELETE FROM attestation_sessions WHERE expires_at <= ?").run(ms(now)).changes;
  }
}


/** One issued SVID's row: alone (SvidRepository.record) or inside an audit append. */
function insertSvid(db: Db, s: IssuedSvidRecord): void {
  prepared(db, `INSERT INTO issued_svids (${SVID_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)`).run(...svidRowValues(s));
}

class SqliteSvids implements SvidRepository {
  constructor(private readonly db: Db) {}

  async record(s: IssuedSvidRecord): Promise<void> {
    insertSvid(this.db, s);
  }

  async get(serial: string): Promise<IssuedSvidRecord | undefined> {
    const r = prepared(this.db, "SELECT * FROM issued_svids WHERE serial = ?").get(serial) as Row | undefined;
    return r ? svidFromRow(r) : undefined;
  }

  async latestExpiry(caKeyId: string): Promise<Date | undefined> {
    const r = prepared(this.db, "SELECT MAX(not_after) AS m FROM issued_svids WHERE ca_key_id = ?").get(caKeyId) as Row;
    return optDate(r.m);
  }

  async countByKind(): Promise<Record<string, number>> {
    const rows = prepared(this.db, "SELECT kind, COUNT(*) AS n FROM issued_svids GROUP BY kind").all() as Row[];
    return Object.fromEntries(rows.map((r) => [String(r.kind), Number(r.n)]));
  }
}

class SqliteAccessTokens implements AccessTokenRepository {
  constructor(private readonly db: Db) {}

  async record(t: AccessTokenRecord): Promise<void> {
    prepared(
      this.db,
      `INSERT INTO access_tokens (jti, parent_jti, delegation_id, client_id, actor_node_id, subject, subject_issuer, scope, audience, jkt, key_id, issued_at, expires_at, revoked_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      t.jti,
      t.parentJti ?? null,
      t.delegationId,
      t.clientId,
      t.actorNodeId,
      t.subject,
      t.subjectIssuer,
      t.scope,
      JSON.stringify(t.audience),
      t.jkt ?? null,
      t.keyId,
      ms(t.issuedAt),
      ms(t.expiresAt),
      t.revokedAt ? ms(t.revokedAt) : null,
    );
  }

  async get(jti: string): Promise<AccessTokenRecord | undefined> {
    const r = prepared(this.db, "SELECT * FROM access_tokens WHERE jti = ?").get(jti) as Row | undefined;
    return r ? accessTokenOf(r) : undefined;
  }

  async lineage(jti: string): Promise<AccessTokenRecord[]> {
    // Standard SQL (WITH RECURSIVE): PostgreSQL runs it as it is. The depth bound stops a cycle
    // that no code writes but a hand-edited database could hold.
    const rows = prepared(
      this.db,
      `WITH RECURSIVE chain(jti, depth) AS (
         SELECT jti, 0 FROM access_tokens WHERE jti = ?
         UNION ALL
         SELECT t.parent_jti, c.depth + 1 FROM chain c JOIN access_tokens t ON t.jti = c.jti
         WHERE t.parent_jti IS NOT NULL AND c.depth + 1 < ?
       )
       SELECT t.* FROM chain c JOIN access_tokens t ON t.jti = c.jti ORDER BY c.depth`,
    ).all(jti, MAX_LINEAGE_LINKS) as Row[];
    return rows.map(accessTokenOf);
  }

  async revoke(jti: string, at: Date): Promise<boolean> {
    const exists = prepared(this.db, "SELECT 1 FROM access_tokens WHERE jti = ?").get(jti) !== undefined;
    if (exists) prepared(this.db, "UPDATE access_tokens SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL").run(ms(at), jti);
    return exists;
  }

  async descendants(jti: string): Promise<string[]> {
    const rows = prepared(
      this.db,
      `WITH RECURSIVE below(jti, depth) AS (
         SELECT jti, 1 FROM access_tokens WHERE parent_jti = ?
         UNION ALL
         SELECT t.jti, b.depth + 1 FROM below b JOIN access_tokens t ON t.parent_jti = b.jti WHERE b.depth < ?
       )
       SELECT DISTINCT jti FROM below ORDER BY jti`,
    ).all(jti, MAX_LINEAGE_LINKS) as Row[];
    return rows.map((r) => String(r.jti));
  }

  async latestExpiry(keyId: string): Promise<Date | undefined> {
    const r = prepared(this.db, "SELECT MAX(expires_at) AS m FROM access_tokens WHERE key_id = ?").get(keyId) as Row;
    return optDate(r.m);
  }

  async purgeExpired(now: Date): Promise<number> {
    return prepared(this.db, "DELETE FROM access_tokens WHERE expires_at <= ?").run(ms(now)).changes;
  }
}



class SqliteCaKeys implements CaKeyRepository {
  constructor(private readonly db: Db) {}

  async list(kind?: CaKeyKind): Promise<CaKeyRecord[]> {
    const rows = (
      kind
        ? prepared(this.db, "SELECT * FROM ca_keys WHERE kind = ? AND status != 'pending' ORDER BY created_at, id").all(kind)
        : prepared(this.db, "SELECT * FROM ca_keys WHERE status != 'pending' ORDER BY created_at, id").all()
    ) as Row[];
    return rows.map(caKeyFromRow);
  }

  async listPending(): Promise<CaKeyRecord[]> {
    const rows = prepared(this.db, "SELECT * FROM ca_keys WHERE status = 'pending' ORDER BY created_at, id").all() as Row[];
    return rows.map(caKeyFromRow);
  }

  async get(id: string): Promise<CaKeyRecord | undefined> {
    const row = prepared(this.db, "SELECT * FROM ca_keys WHERE id = ?").get(id) as Row | undefined;
    return row && caKeyFromRow(row);
  }

  async insert(k: CaKeyRecord): Promise<void> {
    prepared(
        this.db,
        `INSERT INTO ca_keys (id, kind, label, key_type, status, certificate, upstream_chain, kid, not_after, created_at, activated_at, retired_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        k.id,
        k.kind,
        k.label,
        k.keyType,
        k.status,
        k.certificate ?? null,
        upstreamChainColumn(k.upstreamChain),
        k.kid ?? null,
        k.notAfter ? ms(k.notAfter) : null,
        ms(k.createdAt),
        k.activatedAt ? ms(k.activatedAt) : null,
        k.retiredAt ? ms(k.retiredAt) : null,
      );
  }

  async markPrepared(k: CaKeyRecord): Promise<void> {
    const changed = prepared(
      this.db,
      "UPDATE ca_keys SET status = 'prepared', certificate = ?, upstream_chain = ?, kid = ?, not_after = ? WHERE id = ? AND status = 'pending'",
    ).run(k.certificate ?? null, upstreamChainColumn(k.upstreamChain), k.kid ?? null, k.notAfter ? ms(k.notAfter) : null, k.id).changes;
    if (changed !== 1) throw new HallmarkError("internal", "no pending CA key record to complete", { internal: k.id });
  }

  async discardPending(id: string): Promise<boolean> {
    return prepared(this.db, "DELETE FROM ca_keys WHERE id = ? AND status = 'pending'").run(id).changes === 1;
  }

  async setStatus(id: string, status: CaKeyStatus, at: Date): Promise<void> {
    const column = STATUS_TIME_COLUMN[status];
    const sql = column
      ? `UPDATE ca_keys SET status = ?, ${column} = ? WHERE id = ?`
      : "UPDATE ca_keys SET status = ? WHERE id = ?";
    const args = column ? [status, ms(at), id] : [status, id];
    if (prepared(this.db, sql).run(...args).changes !== 1) {
      throw new HallmarkError("internal", "CA key record not found", { internal: id });
    }
  }

  async bumpBundleSequence(): Promise<number> {
    const row = prepared(this.db, "UPDATE bundle_state SET sequence = sequence + 1 WHERE id = 1 RETURNING sequence")
      .get() as Row;
    return Number(row.sequence);
  }

  async bundleSequence(): Promise<number> {
    const row = prepared(this.db, "SELECT sequence FROM bundle_state WHERE id = 1").get() as Row;
    return Number(row.sequence);
  }
}



class SqliteDelegations implements DelegationRepository {
  constructor(private readonly db: Db) {}

  async create(d: DelegationRecord): Promise<void> {
    prepared(
      this.db,
      `INSERT INTO delegations (id, actor, subject_issuer, subject, scopes, audiences, max_ttl, require_dpop, require_attestor, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      d.id,
      d.actor,
      d.subjectIssuer,
      d.subject ?? null,
      JSON.stringify(d.scopes),
      JSON.stringify(d.audiences),
      d.maxTtlSeconds,
      d.requireDpop ? 1 : 0,
      d.requireAttestor ?? null,
      ms(d.createdAt),
    );
  }

  async get(id: string): Promise<DelegationRecord | undefined> {
    const row = prepared(this.db, "SELECT * FROM delegations WHERE id = ?").get(id) as Row | undefined;
    return row && delegationFromRow(row);
  }

  async list(filter: { actor?: string } = {}): Promise<DelegationRecord[]> {
    const rows = (
      filter.actor !== undefined
        ? prepared(this.db, "SELECT * FROM delegations WHERE actor = ? ORDER BY created_at, id").all(filter.actor)
        : prepared(this.db, "SELECT * FROM delegations ORDER BY created_at, id").all()
    ) as Row[];
    return rows.map(delegationFromRow);
  }

  async delete(id: string): Promise<boolean> {
    return prepared(this.db, "DELETE FROM delegations WHERE id = ?").run(id).changes > 0;
  }

  async findFor(actor: string, subjectIssuer: string, subject: string): Promise<DelegationRecord[]> {
    const rows = prepared(
      this.db,
      `SELECT * FROM delegations WHERE actor = ? AND subject_issuer = ? AND (subject IS NULL OR subject = ?)
       ORDER BY created_at, id`,
    ).all(actor, subjectIssuer, subject) as Row[];
    return rows.map(delegationFromRow);
  }
}



class SqliteAudit implements AuditRepository {
  constructor(private readonly db: Db) {}

  async appendBatch(items: readonly AuditAppend[], hashRecord: AuditHasher): Promise<AuditRecord[]> {
    // IMMEDIATE takes the write lock before reading the tail, so two writers cannot fork the chain.
    const tx = this.db.transaction((): AuditRecord[] => {
      for (const { svid } of items) if (svid) insertSvid(this.db, svid);
      const last = prepared(this.db, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").get() as Row | undefined;
      let seq = last ? Number(last.seq) : 0;
      let prevHash = last ? String(last.hash) : AUDIT_GENESIS_HASH;
      const insert = prepared(this.db, `INSERT INTO audit_log (${AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
      return items.map(({ input }) => {
        seq += 1;
        const record: AuditRecord = { ...input, seq, prevHash, hash: hashRecord(input, prevHash, seq) };
        insert.run(...auditRowValues(record));
        prevHash = record.hash;
        return record;
      });
    });
    return tx.immediate();
  }

  async list(afterSeq: number, limit: number): Promise<AuditRecord[]> {
    return (prepared(this.db, "SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?").all(afterSeq, limit) as Row[]).map(auditFromRow);
  }

  async tail(limit: number): Promise<AuditRecord[]> {
    const rows = prepared(this.db, "SELECT * FROM (SELECT * FROM audit_log ORDER BY seq DESC LIMIT ?) ORDER BY seq").all(limit) as Row[];
    return rows.map(auditFromRow);
  }

  async extent(): Promise<{ count: number; lastSeq: number }> {
    const r = prepared(this.db, "SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS last FROM audit_log").get() as Row;
    return { count: Number(r.n), lastSeq: Number(r.last) };
  }
}

class SqliteTransparency implements TransparencyRepository {
  constructor(private readonly db: Db) {}

  async state(): Promise<TlogState> {
    return this.readState();
  }

  private readState(): TlogState {
    const r = prepared(this.db, "SELECT * FROM tlog_state WHERE id = 1").get() as Row | undefined;
    if (!r) return { integratedSize: 0 };
    const checkpoint: TlogSignedCheckpoint | undefined =
      r.checkpoint === null || r.checkpoint === undefined
        ? undefined
        : { text: String(r.checkpoint), treeSize: Number(r.checkpoint_size), rootHash: Buffer.from(r.checkpoint_root as Buffer), signedAt: date(r.checkpoint_at) };
    return { integratedSize: Number(r.integrated_size), checkpoint };
  }

  async readHashes(ids: readonly { level: number; index: number }[]): Promise<Array<Buffer | undefined>> {
    const st = prepared(this.db, "SELECT hash FROM tlog_hashes WHERE level = ? AND idx = ?");
    // One read transaction: every hash of one proof comes from the same snapshot.
    return this.db.transaction(() =>
      ids.map(({ level, index }) => {
        const r = st.get(level, index) as { hash: Buffer } | undefined;
        return r ? Buffer.from(r.hash) : undefined;
      }),
    )();
  }

  async integrate(fromSize: number, toSize: number, hashes: readonly TlogStoredHash[]): Promise<boolean> {
    const tx = this.db.transaction((): boolean => {
      const moved = prepared(this.db, "UPDATE tlog_state SET integrated_size = ? WHERE id = 1 AND integrated_size = ?").run(toSize, fromSize);
      if (moved.changes !== 1) return false;
      const insert = prepared(this.db, "INSERT INTO tlog_hashes (level, idx, hash) VALUES (?, ?, ?)");
      for (const h of hashes) insert.run(h.level, h.index, h.hash);
      return true;
    });
    return tx.immediate();
  }

  async saveCheckpoint(previousSize: number | undefined, cp: TlogSignedCheckpoint): Promise<boolean> {
    const r = prepared(
      this.db,
      `UPDATE tlog_state SET checkpoint = ?, checkpoint_size = ?, checkpoint_root = ?, checkpoint_at = ?
       WHERE id = 1 AND checkpoint_size IS ? AND integrated_size >= ?`,
    ).run(cp.text, cp.treeSize, cp.rootHash, ms(cp.signedAt), previousSize ?? null, cp.treeSize);
    return r.changes === 1;
  }
}

