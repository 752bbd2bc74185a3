/**
 * The repositories of the PostgreSQL store: the same semantics as the SQLite ones, with what
 * several replicas on one database need. Read-modify-write paths are single statements whose
 * WHERE decides (READ COMMITTED re-checks it on the row a concurrent writer left: one winner), or
 * transactions serialised by a row lock or an advisory lock where a sequence must stay gapless.
 */
import type pg from "pg";
import type { JsonObject } from "../../attestors/types.js";
import { HallmarkError } from "../../errors.js";
import {
  type Row,
  STATUS_TIME_COLUMN,
  AUDIT_COLUMNS,
  SVID_COLUMNS,
  accessTokenOf,
  auditFromRow,
  auditRowValues,
  banFromRow,
  caKeyFromRow,
  delegationFromRow,
  entryFromRow,
  federationFromRow,
  federationParams,
  json,
  ms,
  nodeFromRow,
  optDate,
  optMs,
  sessionFromRow,
  svidFromRow,
  svidRowValues,
  tokenFromRow,
  upstreamChainColumn,
} from "../rows.js";
import {
  AUDIT_GENESIS_HASH,
  type AccessTokenRecord,
  type AccessTokenRepository,
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
  type DelegationRecord,
  type DelegationRepository,
  type DpopProofRepository,
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
  type SvidRepository,
  type TlogSignedCheckpoint,
  type TlogState,
  type TlogStoredHash,
  type TransparencyRepository,
} from "../types.js";
import { type Queryable, inTransaction, isUniqueViolation } from "./connection.js";
import { CHANGE_CHANNEL, NOTIFY_SQL } from "./coordination.js";

type Pool = pg.Pool;

async function one(db: Pool | pg.PoolClient, sql: string, args: unknown[] = []): Promise<Row | undefined> {
  return (await db.query(sql, args)).rows[0] as Row | undefined;
}
async function all(db: Pool | pg.PoolClient, sql: string, args: unknown[] = []): Promise<Row[]> {
  return (await db.query(sql, args)).rows as Row[];
}
async function changed(db: Pool | pg.PoolClient, sql: string, args: unknown[] = []): Promise<number> {
  return (await db.query(sql, args)).rowCount ?? 0;
}
const list = (v: readonly string[]): string => JSON.stringify(v);

export class PgNodes implements NodeRepository {
  constructor(private readonly db: Pool) {}

  async get(spiffeId: string): Promise<NodeRecord | undefined> {
    const r = await one(this.db, "SELECT * FROM nodes WHERE spiffe_id = $1", [spiffeId]);
    return r && nodeFromRow(r);
  }

  async upsert(n: NodeRecord): Promise<void> {
    await this.db.query(
      `INSERT INTO nodes (spiffe_id, attestor_type, hardware_id, selectors, can_reattest, serial, expires_at,
         previous_serial, previous_valid_until, evicted, evicted_at, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
       ON CONFLICT (spiffe_id) DO UPDATE SET attestor_type = excluded.attestor_type, hardware_id = excluded.hardware_id,
         selectors = excluded.selectors, can_reattest = excluded.can_reattest, serial = excluded.serial,
         expires_at = excluded.expires_at, previous_serial = excluded.previous_serial,
         previous_valid_until = excluded.previous_valid_until, evicted = excluded.evicted,
         evicted_at = excluded.evicted_at, updated_at = excluded.updated_at`,
      [
        n.spiffeId,
        n.attestorType,
        n.hardwareId ?? null,
        list(n.selectors),
        n.canReattest,
        n.serial ?? null,
        optMs(n.expiresAt),
        n.previousSerial ?? null,
        optMs(n.previousValidUntil),
        n.evicted,
        optMs(n.evictedAt),
        ms(n.createdAt),
        ms(n.updatedAt),
      ],
    );
  }

  async list(): Promise<NodeRecord[]> {
    return (await all(this.db, "SELECT * FROM nodes ORDER BY spiffe_id")).map(nodeFromRow);
  }

  async evict(spiffeId: string, at: Date): Promise<boolean> {
    const n = await changed(
      this.db,
      `UPDATE nodes SET evicted = true, evicted_at = $1, previous_serial = NULL, previous_valid_until = NULL, updated_at = $1
       WHERE spiffe_id = $2`,
      [ms(at), spiffeId],
    );
    return n > 0;
  }

  async delete(spiffeId: string): Promise<boolean> {
    return (await changed(this.db, "DELETE FROM nodes WHERE spiffe_id = $1", [spiffeId])) > 0;
  }

  async ban(b: NodeBanRecord): Promise<void> {
    await this.db.query(
      `INSERT INTO node_bans (spiffe_id, attestor_type, hardware_id, created_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (spiffe_id) DO UPDATE SET attestor_type = excluded.attestor_type, hardware_id = excluded.hardware_id,
         created_at = excluded.created_at`,
      [b.spiffeId, b.attestorType, b.hardwareId ?? null, ms(b.createdAt)],
    );
  }

  async unban(spiffeId: string): Promise<boolean> {
    return (await changed(this.db, "DELETE FROM node_bans WHERE spiffe_id = $1", [spiffeId])) > 0;
  }

  async findBan(spiffeId: string, attestorType: string, hardwareId: string | undefined): Promise<NodeBanRecord | undefined> {
    const r = await one(
      this.db,
      `SELECT * FROM node_bans WHERE spiffe_id = $1
         OR ($3::text IS NOT NULL AND attestor_type = $2 AND hardware_id = $3) LIMIT 1`,
      [spiffeId, attestorType, hardwareId ?? null],
    );
    return r && banFromRow(r);
  }

  async listBans(): Promise<NodeBanRecord[]> {
    return (await all(this.db, "SELECT * FROM node_bans ORDER BY spiffe_id")).map(banFromRow);
  }
}

export class PgEntries implements EntryRepository {
  constructor(private readonly db: Pool) {}

  async create(e: EntryRecord): Promise<void> {
    const selectors = list([...e.selectors].sort());
    try {
      await inTransaction(this.db, async (c) => {
        await c.query(
          `INSERT INTO entries (id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, dns_names, admin, hint, federates_with, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
          [
            e.id,
            e.spiffeId,
            e.parentId,
            selectors,
            e.x509SvidTtlSeconds ?? null,
            e.jwtSvidTtlSeconds ?? null,
            list(e.dnsNames),
            e.admin,
            e.hint ?? "",
            list(e.federatesWith ?? []),
            ms(e.createdAt),
          ],
        );
        await logChange(c, e.id, "created", e.parentId, selectors, e.createdAt);
      });
    } catch (cause) {
      if (isUniqueViolation(cause)) throw new HallmarkError("entry_exists", "an entry with this SPIFFE ID, parent and selectors exists");
      throw cause;
    }
  }

  async get(id: string): Promise<EntryRecord | undefined> {
    const r = await one(this.db, "SELECT * FROM entries WHERE id = $1", [id]);
    return r && entryFromRow(r);
  }

  async list(filter: { parentId?: string; spiffeId?: string } = {}): Promise<EntryRecord[]> {
    const where: string[] = [];
    const args: string[] = [];
    if (filter.parentId !== undefined) where.push(`parent_id = $${args.push(filter.parentId)}`);
    if (filter.spiffeId !== undefined) where.push(`spiffe_id = $${args.push(filter.spiffeId)}`);
    const sql = `SELECT * FROM entries ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY created_at, id`;
    return (await all(this.db, sql, args)).map(entryFromRow);
  }

  async listForSpiffeId(spiffeId: string, parentIds: readonly string[]): Promise<EntryRecord[]> {
    const rows = await all(this.db, "SELECT * FROM entries WHERE spiffe_id = $1 AND parent_id = ANY($2::text[]) ORDER BY created_at, id", [spiffeId, [...parentIds]]);
    return rows.map(entryFromRow);
  }

  async listByParent(parentId: string, afterId: string | undefined, limit: number): Promise<EntryRecord[]> {
    const rows = await all(this.db, "SELECT * FROM entries WHERE parent_id = $1 AND id > $2 ORDER BY id LIMIT $3", [parentId, afterId ?? "", limit]);
    return rows.map(entryFromRow);
  }

  async delete(id: string, at: Date): Promise<boolean> {
    return inTransaction(this.db, async (c) => {
      const r = await one(c, "DELETE FROM entries WHERE id = $1 RETURNING parent_id, selectors", [id]);
      if (!r) return false;
      await logChange(c, id, "deleted", String(r.parent_id), JSON.stringify(r.selectors), at);
      return true;
    });
  }

  async revision(): Promise<number> {
    return Number((await one(this.db, "SELECT revision FROM entry_revision WHERE id = 1"))?.revision ?? 0);
  }

  async pruneChanges(before: Date): Promise<number> {
    return changed(this.db, "DELETE FROM entry_changes WHERE changed_at < $1", [ms(before)]);
  }

  async changesSince(revision: number, limit: number): Promise<EntryChangePage | undefined> {
    // One snapshot for the head and the page: a change committed in between is in neither.
    return inTransaction(
      this.db,
      async (c): Promise<EntryChangePage | undefined> => {
        const head = Number((await one(c, "SELECT revision FROM entry_revision WHERE id = 1"))?.revision ?? 0);
        const oldest = (await one(c, "SELECT MIN(revision) AS r FROM entry_changes"))?.r;
        const floor = oldest === null || oldest === undefined ? head : Number(oldest) - 1;
        if (!Number.isSafeInteger(revision) || revision < floor || revision > head) return undefined;
        const rows = await all(
          c,
          `SELECT c.revision, c.entry_id, c.kind, c.parent_id AS change_parent, c.selectors AS change_selectors, e.*
           FROM entry_changes c LEFT JOIN entries e ON c.kind = 'created' AND e.id = c.entry_id
           WHERE c.revision > $1 ORDER BY c.revision LIMIT $2`,
          [revision, limit],
        );
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
      },
      "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    );
  }
}

/**
 * Logs one change under the next revision. The counter row stays locked until the transaction
 * commits, so changes commit in revision order across replicas (see migration 3).
 */
async function logChange(c: pg.PoolClient, entryId: string, kind: EntryChange["kind"], parentId: string, selectors: string, at: Date): Promise<void> {
  const r = await one(c, "UPDATE entry_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision");
  await c.query("INSERT INTO entry_changes (revision, entry_id, kind, parent_id, selectors, changed_at) VALUES ($1, $2, $3, $4, $5, $6)", [
    r!.revision,
    entryId,
    kind,
    parentId,
    selectors,
    ms(at),
  ]);
  // Delivered to every replica when this transaction commits (and never if it rolls back):
  // their agents' long polls wake at once instead of at their next poll.
  await c.query(NOTIFY_SQL, ["entries"]);
}

export class PgFederations implements FederationRepository {
  constructor(private readonly db: Pool) {}

  async create(f: FederationRecord): Promise<void> {
    const p = federationParams(f);
    try {
      await this.db.query(
        `INSERT INTO federations (trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, web_roots_pem, bundle, bundle_sequence,
           refresh_hint, last_refresh_at, last_outcome, last_error, next_refresh_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
        [p.trustDomain, p.url, p.profile, p.endpointId, p.webRoots, p.bundle, p.sequence, p.hint, p.lastAt, p.outcome, p.error, p.nextAt, p.createdAt, p.updatedAt],
      );
    } catch (cause) {
      if (isUniqueViolation(cause)) throw new HallmarkError("federation_exists", `a federation relationship with ${f.trustDomain} exists already`);
      throw cause;
    }
  }

  async get(trustDomain: string): Promise<FederationRecord | undefined> {
    const r = await one(this.db, "SELECT * FROM federations WHERE trust_domain = $1", [trustDomain]);
    return r && federationFromRow(r);
  }

  async list(): Promise<FederationRecord[]> {
    return (await all(this.db, "SELECT * FROM federations ORDER BY trust_domain")).map(federationFromRow);
  }

  async update(f: FederationRecord): Promise<boolean> {
    const p = federationParams(f);
    const n = await changed(
      this.db,
      `UPDATE federations SET bundle_endpoint_url = $2, profile = $3, endpoint_spiffe_id = $4, web_roots_pem = $5,
         bundle = $6, bundle_sequence = $7, refresh_hint = $8, next_refresh_at = $9, updated_at = $10
       WHERE trust_domain = $1`,
      [p.trustDomain, p.url, p.profile, p.endpointId, p.webRoots, p.bundle, p.sequence, p.hint, p.nextAt, p.updatedAt],
    );
    return n > 0;
  }

  async delete(trustDomain: string): Promise<boolean> {
    return (await changed(this.db, "DELETE FROM federations WHERE trust_domain = $1", [trustDomain])) > 0;
  }

  async recordRefresh(trustDomain: string, r: FederationRefreshRecord): Promise<void> {
    const common = [trustDomain, ms(r.at), r.outcome, r.error ?? null, ms(r.nextRefreshAt)];
    if (r.bundle) {
      await this.db.query(
        `UPDATE federations SET bundle = $6, bundle_sequence = $7, refresh_hint = $8, last_refresh_at = $2,
           last_outcome = $3, last_error = $4, next_refresh_at = $5, updated_at = $2 WHERE trust_domain = $1`,
        [...common, r.bundle.json, r.bundle.sequence ?? null, r.bundle.refreshHintSeconds ?? null],
      );
    } else {
      await this.db.query(
        "UPDATE federations SET last_refresh_at = $2, last_outcome = $3, last_error = $4, next_refresh_at = $5 WHERE trust_domain = $1",
        common,
      );
    }
  }

  async due(now: Date): Promise<FederationRecord[]> {
    return (await all(this.db, "SELECT * FROM federations WHERE next_refresh_at <= $1 ORDER BY next_refresh_at", [ms(now)])).map(federationFromRow);
  }
}

export class PgJoinTokens implements JoinTokenRepository {
  constructor(private readonly db: Pool) {}

  async create(t: JoinTokenRecord): Promise<void> {
    await this.db.query("INSERT INTO join_tokens (token_hash, spiffe_id, expires_at, used_at, created_at) VALUES ($1, $2, $3, NULL, $4)", [
      t.tokenHash,
      t.spiffeId,
      ms(t.expiresAt),
      ms(t.createdAt),
    ]);
  }

  async get(tokenHash: string): Promise<JoinTokenRecord | undefined> {
    const r = await one(this.db, "SELECT * FROM join_tokens WHERE token_hash = $1", [tokenHash]);
    return r && tokenFromRow(r);
  }

  async consume(tokenHash: string, now: Date): Promise<{ outcome: ConsumeOutcome; record?: JoinTokenRecord }> {
    // One statement decides: a racing replica waits on the row lock, then finds used_at set.
    const r = await one(this.db, "UPDATE join_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING *", [
      ms(now),
      tokenHash,
    ]);
    if (r) return { outcome: "consumed", record: tokenFromRow(r) };
    const record = await this.get(tokenHash);
    if (!record) return { outcome: "not_found" };
    return { outcome: record.usedAt ? "used" : "expired", record };
  }

  async purgeExpired(now: Date): Promise<number> {
    return changed(this.db, "DELETE FROM join_tokens WHERE expires_at <= $1", [ms(now)]);
  }
}

export class PgDpopProofs implements DpopProofRepository {
  constructor(private readonly db: Pool) {}

  async remember(key: string, until: Date, now: Date): Promise<boolean> {
    // A concurrent insert of the same key waits for the first, then meets the conflict: live, so no row changes.
    const n = await changed(
      this.db,
      "INSERT INTO dpop_proofs (key, expires_at) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE dpop_proofs.expires_at <= $3",
      [key, ms(until), ms(now)],
    );
    return n === 1;
  }

  async purgeExpired(now: Date): Promise<number> {
    return changed(this.db, "DELETE FROM dpop_proofs WHERE expires_at <= $1", [ms(now)]);
  }
}

export class PgSessions implements SessionRepository {
  constructor(private readonly db: Pool) {}

  async create(s: AttestationSessionRecord): Promise<void> {
    await this.db.query(
      `INSERT INTO attestation_sessions (id, attestor_type, nonce, status, bound_spki, state, expires_at, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [s.id, s.attestorType, s.nonce, s.status, s.boundSpki ?? null, s.state ? JSON.stringify(s.state) : null, ms(s.expiresAt), ms(s.createdAt)],
    );
  }

  async get(id: string): Promise<AttestationSessionRecord | undefined> {
    const r = await one(this.db, "SELECT * FROM attestation_sessions WHERE id = $1", [id]);
    return r && sessionFromRow(r);
  }

  async transition(
    id: string,
    from: SessionStatus,
    to: SessionStatus,
    now: Date,
    update: { state?: JsonObject | undefined; boundSpki?: Buffer | undefined } = {},
  ): Promise<ConsumeOutcome> {
    const n = await changed(
      this.db,
      `UPDATE attestation_sessions
         SET status = $3,
             state = CASE WHEN $5::boolean THEN $6::jsonb ELSE state END,
             bound_spki = COALESCE($7::bytea, bound_spki)
       WHERE id = $1 AND status = $2 AND expires_at > $4`,
      [id, from, to, ms(now), "state" in update, update.state ? JSON.stringify(update.state) : null, update.boundSpki ?? null],
    );
    if (n === 1) return "consumed";
    const s = await this.get(id);
    if (!s) return "not_found";
    if (s.status !== from) return "used";
    return "expired";
  }

  async purgeExpired(now: Date): Promise<number> {
    return changed(this.db, "DELETE FROM attestation_sessions WHERE expires_at <= $1", [ms(now)]);
  }
}

/**
 * One multi-row INSERT of `rows` (each the column values in `columns`' order): one round trip for
 * a whole audit batch, while the batch holds the audit sequencer's lock.
 */
async function insertRows(db: Queryable, table: string, columns: string, rows: readonly unknown[][]): Promise<void> {
  if (rows.length === 0) return;
  const params: unknown[] = [];
  const tuples = rows.map((row) => `(${row.map((v) => `$${params.push(v)}`).join(", ")})`);
  await db.query(`INSERT INTO ${table} (${columns}) VALUES ${tuples.join(", ")}`, params);
}

/** Issued SVIDs' rows: alone (SvidRepository.record) or inside an audit append's transaction. */
async function insertSvids(db: Queryable, svids: readonly IssuedSvidRecord[]): Promise<void> {
  // The primary key makes a serial unique across replicas: a duplicate fails here, never silently.
  await insertRows(db, "issued_svids", SVID_COLUMNS, svids.map(svidRowValues));
}

export class PgSvids implements SvidRepository {
  constructor(private readonly db: Pool) {}

  async record(s: IssuedSvidRecord): Promise<void> {
    await insertSvids(this.db, [s]);
  }

  async get(serial: string): Promise<IssuedSvidRecord | undefined> {
    const r = await one(this.db, "SELECT * FROM issued_svids WHERE serial = $1", [serial]);
    return r ? svidFromRow(r) : undefined;
  }

  async latestExpiry(caKeyId: string): Promise<Date | undefined> {
    return optDate((await one(this.db, "SELECT MAX(not_after) AS m FROM issued_svids WHERE ca_key_id = $1", [caKeyId]))?.m);
  }

  async countByKind(): Promise<Record<string, number>> {
    const rows = await all(this.db, "SELECT kind, COUNT(*) AS n FROM issued_svids GROUP BY kind");
    return Object.fromEntries(rows.map((r) => [String(r.kind), Number(r.n)]));
  }
}

export class PgAccessTokens implements AccessTokenRepository {
  constructor(private readonly db: Pool) {}

  async record(t: AccessTokenRecord): Promise<void> {
    await this.db.query(
      `INSERT INTO access_tokens (jti, parent_jti, delegation_id, client_id, actor_node_id, subject, subject_issuer, scope, audience, jkt, key_id, issued_at, expires_at, revoked_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
      [
        t.jti,
        t.parentJti ?? null,
        t.delegationId,
        t.clientId,
        t.actorNodeId,
        t.subject,
        t.subjectIssuer,
        t.scope,
        list(t.audience),
        t.jkt ?? null,
        t.keyId,
        ms(t.issuedAt),
        ms(t.expiresAt),
        optMs(t.revokedAt),
      ],
    );
  }

  async get(jti: string): Promise<AccessTokenRecord | undefined> {
    const r = await one(this.db, "SELECT * FROM access_tokens WHERE jti = $1", [jti]);
    return r ? accessTokenOf(r) : undefined;
  }

  async lineage(jti: string): Promise<AccessTokenRecord[]> {
    const rows = await all(
      this.db,
      `WITH RECURSIVE chain(jti, depth) AS (
         SELECT jti, 0 FROM access_tokens WHERE jti = $1
         UNION ALL
         SELECT t.parent_jti, c.depth + 1 FROM chain c JOIN access_tokens t ON t.jti = c.jti
         WHERE t.parent_jti IS NOT NULL AND c.depth + 1 < $2
       )
       SELECT t.* FROM chain c JOIN access_tokens t ON t.jti = c.jti ORDER BY c.depth`,
      [jti, MAX_LINEAGE_LINKS],
    );
    return rows.map(accessTokenOf);
  }

  async revoke(jti: string, at: Date): Promise<boolean> {
    // Exists or not, in one statement: the update changes nothing when already revoked.
    const r = await one(
      this.db,
      `WITH updated AS (UPDATE access_tokens SET revoked_at = $2 WHERE jti = $1 AND revoked_at IS NULL RETURNING jti)
       SELECT EXISTS (SELECT 1 FROM access_tokens WHERE jti = $1) OR EXISTS (SELECT 1 FROM updated) AS found`,
      [jti, ms(at)],
    );
    return r?.found === true;
  }

  async descendants(jti: string): Promise<string[]> {
    const rows = await all(
      this.db,
      `WITH RECURSIVE below(jti, depth) AS (
         SELECT jti, 1 FROM access_tokens WHERE parent_jti = $1
         UNION ALL
         SELECT t.jti, b.depth + 1 FROM below b JOIN access_tokens t ON t.parent_jti = b.jti WHERE b.depth < $2
       )
       SELECT DISTINCT jti FROM below ORDER BY jti`,
      [jti, MAX_LINEAGE_LINKS],
    );
    return rows.map((r) => String(r.jti));
  }

  async latestExpiry(keyId: string): Promise<Date | undefined> {
    return optDate((await one(this.db, "SELECT MAX(expires_at) AS m FROM access_tokens WHERE key_id = $1", [keyId]))?.m);
  }

  async purgeExpired(now: Date): Promise<number> {
    return changed(this.db, "DELETE FROM access_tokens WHERE expires_at <= $1", [ms(now)]);
  }
}

export class PgCaKeys implements CaKeyRepository {
  constructor(private readonly db: Pool) {}

  async list(kind?: CaKeyKind): Promise<CaKeyRecord[]> {
    const rows = kind
      ? await all(this.db, "SELECT * FROM ca_keys WHERE kind = $1 AND status != 'pending' ORDER BY created_at, id", [kind])
      : await all(this.db, "SELECT * FROM ca_keys WHERE status != 'pending' ORDER BY created_at, id");
    return rows.map(caKeyFromRow);
  }

  async listPending(): Promise<CaKeyRecord[]> {
    return (await all(this.db, "SELECT * FROM ca_keys WHERE status = 'pending' ORDER BY created_at, id")).map(caKeyFromRow);
  }

  async get(id: string): Promise<CaKeyRecord | undefined> {
    const r = await one(this.db, "SELECT * FROM ca_keys WHERE id = $1", [id]);
    return r && caKeyFromRow(r);
  }

  async insert(k: CaKeyRecord): Promise<void> {
    await this.db.query(
      `INSERT INTO ca_keys (id, kind, label, key_type, status, certificate, upstream_chain, kid, not_after, created_at, activated_at, retired_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
      [
        k.id,
        k.kind,
        k.label,
        k.keyType,
        k.status,
        k.certificate ?? null,
        upstreamChainColumn(k.upstreamChain),
        k.kid ?? null,
        optMs(k.notAfter),
        ms(k.createdAt),
        optMs(k.activatedAt),
        optMs(k.retiredAt),
      ],
    );
  }

  async markPrepared(k: CaKeyRecord): Promise<void> {
    const n = await changed(
      this.db,
      "UPDATE ca_keys SET status = 'prepared', certificate = $1, upstream_chain = $2, kid = $3, not_after = $4 WHERE id = $5 AND status = 'pending'",
      [k.certificate ?? null, upstreamChainColumn(k.upstreamChain), k.kid ?? null, optMs(k.notAfter), k.id],
    );
    if (n !== 1) throw new HallmarkError("internal", "no pending CA key record to complete", { internal: k.id });
  }

  async discardPending(id: string): Promise<boolean> {
    return (await changed(this.db, "DELETE FROM ca_keys WHERE id = $1 AND status = 'pending'", [id])) === 1;
  }

  async setStatus(id: string, status: CaKeyStatus, at: Date): Promise<void> {
    const column = STATUS_TIME_COLUMN[status];
    const n = column
      ? await changed(this.db, `UPDATE ca_keys SET status = $1, ${column} = $2 WHERE id = $3`, [status, ms(at), id])
      : await changed(this.db, "UPDATE ca_keys SET status = $1 WHERE id = $2", [status, id]);
    if (n !== 1) throw new HallmarkError("internal", "CA key record not found", { internal: id });
  }

  async bumpBundleSequence(): Promise<number> {
    // One statement, so one transaction: the other replicas hear of the new keys as it commits and reload them.
    const sql = `WITH s AS (UPDATE bundle_state SET sequence = sequence + 1 WHERE id = 1 RETURNING sequence)
                 SELECT s.sequence, pg_notify('${CHANGE_CHANNEL}', 'caKeys') FROM s`;
    return Number((await one(this.db, sql))!.sequence);
  }

  async bundleSequence(): Promise<number> {
    return Number((await one(this.db, "SELECT sequence FROM bundle_state WHERE id = 1"))!.sequence);
  }
}

export class PgDelegations implements DelegationRepository {
  constructor(private readonly db: Pool) {}

  async create(d: DelegationRecord): Promise<void> {
    await this.db.query(
      `INSERT INTO delegations (id, actor, subject_issuer, subject, scopes, audiences, max_ttl, require_dpop, require_attestor, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [d.id, d.actor, d.subjectIssuer, d.subject ?? null, list(d.scopes), list(d.audiences), d.maxTtlSeconds, d.requireDpop, d.requireAttestor ?? null, ms(d.createdAt)],
    );
  }

  async get(id: string): Promise<DelegationRecord | undefined> {
    const r = await one(this.db, "SELECT * FROM delegations WHERE id = $1", [id]);
    return r && delegationFromRow(r);
  }

  async list(filter: { actor?: string } = {}): Promise<DelegationRecord[]> {
    const rows =
      filter.actor !== undefined
        ? await all(this.db, "SELECT * FROM delegations WHERE actor = $1 ORDER BY created_at, id", [filter.actor])
        : await all(this.db, "SELECT * FROM delegations ORDER BY created_at, id");
    return rows.map(delegationFromRow);
  }

  async delete(id: string): Promise<boolean> {
    return (await changed(this.db, "DELETE FROM delegations WHERE id = $1", [id])) > 0;
  }

  async findFor(actor: string, subjectIssuer: string, subject: string): Promise<DelegationRecord[]> {
    const rows = await all(
      this.db,
      "SELECT * FROM delegations WHERE actor = $1 AND subject_issuer = $2 AND (subject IS NULL OR subject = $3) ORDER BY created_at, id",
      [actor, subjectIssuer, subject],
    );
    return rows.map(delegationFromRow);
  }
}

/**
 * The advisory lock key of the audit sequencer ("hmaudit" in ASCII): taken by every append for
 * the rest of its transaction, so appends from all replicas form one chain, seq gapless and
 * unique, each record hashing the one committed before it.
 */
const AUDIT_LOCK = 0x686d6175646974n;

export class PgAudit implements AuditRepository {
  constructor(private readonly db: Pool) {}

  async appendBatch(items: readonly AuditAppend[], hashRecord: AuditHasher): Promise<AuditRecord[]> {
    return inTransaction(this.db, async (c) => {
      // Before the sequencer's lock: a duplicate serial fails without holding up other appends.
      await insertSvids(c, items.flatMap(({ svid }) => (svid ? [svid] : [])));
      await c.query("SELECT pg_advisory_xact_lock($1)", [AUDIT_LOCK.toString()]);
      // READ COMMITTED: this statement's snapshot is taken after the lock, so it sees the previous append.
      const last = await one(c, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1");
      let seq = last ? Number(last.seq) : 0;
      let prevHash = last ? String(last.hash) : AUDIT_GENESIS_HASH;
      const records = items.map(({ input }): AuditRecord => {
        seq += 1;
        const record: AuditRecord = { ...input, seq, prevHash, hash: hashRecord(input, prevHash, seq) };
        prevHash = record.hash;
        return record;
      });
      await insertRows(c, "audit_log", AUDIT_COLUMNS, records.map(auditRowValues));
      return records;
    });
  }

  async list(afterSeq: number, limit: number): Promise<AuditRecord[]> {
    return (await all(this.db, "SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2", [afterSeq, limit])).map(auditFromRow);
  }

  async tail(limit: number): Promise<AuditRecord[]> {
    const rows = await all(this.db, "SELECT * FROM (SELECT * FROM audit_log ORDER BY seq DESC LIMIT $1) t ORDER BY seq", [limit]);
    return rows.map(auditFromRow);
  }

  async extent(): Promise<{ count: number; lastSeq: number }> {
    const r = (await one(this.db, "SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS last FROM audit_log"))!;
    return { count: Number(r.n), lastSeq: Number(r.last) };
  }
}

export class PgTransparency implements TransparencyRepository {
  constructor(private readonly db: Pool) {}

  async state(): Promise<TlogState> {
    const r = await one(this.db, "SELECT * FROM tlog_state WHERE id = 1");
    if (!r) return { integratedSize: 0 };
    const checkpoint: TlogSignedCheckpoint | undefined =
      r.checkpoint === null || r.checkpoint === undefined
        ? undefined
        : { text: String(r.checkpoint), treeSize: Number(r.checkpoint_size), rootHash: Buffer.from(r.checkpoint_root as Buffer), signedAt: new Date(Number(r.checkpoint_at)) };
    return { integratedSize: Number(r.integrated_size), checkpoint };
  }

  async readHashes(ids: readonly { level: number; index: number }[]): Promise<Array<Buffer | undefined>> {
    if (ids.length === 0) return [];
    // One statement, so one snapshot: every hash of a proof comes from the same tree.
    const rows = await all(
      this.db,
      `SELECT q.ord, h.hash FROM unnest($1::int[], $2::bigint[]) WITH ORDINALITY AS q(level, idx, ord)
       LEFT JOIN tlog_hashes h ON h.level = q.level AND h.idx = q.idx ORDER BY q.ord`,
      [ids.map((i) => i.level), ids.map((i) => i.index)],
    );
    return rows.map((r) => (r.hash === null || r.hash === undefined ? undefined : Buffer.from(r.hash as Buffer)));
  }

  async integrate(fromSize: number, toSize: number, hashes: readonly TlogStoredHash[]): Promise<boolean> {
    return inTransaction(this.db, async (c) => {
      // The loser of a race waits on the row lock, then finds the size moved: nothing written.
      const moved = await changed(c, "UPDATE tlog_state SET integrated_size = $1 WHERE id = 1 AND integrated_size = $2", [toSize, fromSize]);
      if (moved !== 1) return false;
      if (hashes.length > 0) {
        await c.query("INSERT INTO tlog_hashes (level, idx, hash) SELECT * FROM unnest($1::int[], $2::bigint[], $3::bytea[])", [
          hashes.map((h) => h.level),
          hashes.map((h) => h.index),
          hashes.map((h) => h.hash),
        ]);
      }
      return true;
    });
  }

  async saveCheckpoint(previousSize: number | undefined, cp: TlogSignedCheckpoint): Promise<boolean> {
    const n = await changed(
      this.db,
      `UPDATE tlog_state SET checkpoint = $1, checkpoint_size = $2, checkpoint_root = $3, checkpoint_at = $4
       WHERE id = 1 AND checkpoint_size IS NOT DISTINCT FROM $5::bigint AND integrated_size >= $2`,
      [cp.text, cp.treeSize, cp.rootHash, ms(cp.signedAt), previousSize ?? null],
    );
    return n === 1;
  }
}
