/**
 * Rows to records and back, for both engines: SQLite and PostgreSQL tables have the same columns,
 * so one mapper per record serves both. What differs is tolerated here, in one place: PostgreSQL
 * returns bigint as a string, booleans as booleans and jsonb already parsed; SQLite returns
 * numbers, 0/1 and JSON text.
 */
import type { JsonObject } from "../attestors/types.js";
import type {
  AccessTokenRecord,
  AttestationSessionRecord,
  AuditRecord,
  CaKeyKind,
  CaKeyRecord,
  CaKeyStatus,
  DelegationRecord,
  EntryRecord,
  FederationRecord,
  IssuedSvidRecord,
  JoinTokenRecord,
  NodeBanRecord,
  NodeRecord,
  SessionStatus,
} from "./types.js";

export type Row = Record<string, unknown>;

export const ms = (d: Date): number => d.getTime();
export const optMs = (d: Date | undefined): number | null => (d ? d.getTime() : null);
export const date = (v: unknown): Date => new Date(Number(v));
export const optDate = (v: unknown): Date | undefined => (v === null || v === undefined ? undefined : date(v));
export const optStr = (v: unknown): string | undefined => (v === null || v === undefined ? undefined : String(v));
export const optNum = (v: unknown): number | undefined => (v === null || v === undefined ? undefined : Number(v));
/** SQLite's 0/1 or PostgreSQL's boolean. */
export const flag = (v: unknown): boolean => v === 1 || v === true || v === 1n;
/** JSON text (SQLite) or a jsonb value node-postgres parsed already. */
export function json<T>(v: unknown): T {
  return (typeof v === "string" ? JSON.parse(v) : v) as T;
}
function jsonOr<T>(v: unknown, absent: T): T {
  return v === null || v === undefined ? absent : json<T>(v);
}

export function svidFromRow(r: Row): IssuedSvidRecord {
  return {
    serial: String(r.serial),
    spiffeId: String(r.spiffe_id),
    kind: String(r.kind) as IssuedSvidRecord["kind"],
    nodeId: optStr(r.node_id),
    caKeyId: String(r.ca_key_id),
    issuedAt: date(r.issued_at),
    notAfter: date(r.not_after),
  };
}

export function banFromRow(r: Row): NodeBanRecord {
  return {
    spiffeId: String(r.spiffe_id),
    attestorType: String(r.attestor_type),
    hardwareId: optStr(r.hardware_id),
    createdAt: date(r.created_at),
  };
}

export function nodeFromRow(r: Row): NodeRecord {
  return {
    spiffeId: String(r.spiffe_id),
    attestorType: String(r.attestor_type),
    hardwareId: optStr(r.hardware_id),
    selectors: json<string[]>(r.selectors),
    canReattest: flag(r.can_reattest),
    serial: optStr(r.serial),
    expiresAt: optDate(r.expires_at),
    previousSerial: optStr(r.previous_serial),
    previousValidUntil: optDate(r.previous_valid_until),
    evicted: flag(r.evicted),
    evictedAt: optDate(r.evicted_at),
    createdAt: date(r.created_at),
    updatedAt: date(r.updated_at),
  };
}

export function entryFromRow(r: Row): EntryRecord {
  return {
    id: String(r.id),
    spiffeId: String(r.spiffe_id),
    parentId: String(r.parent_id),
    selectors: json<string[]>(r.selectors),
    x509SvidTtlSeconds: optNum(r.x509_ttl),
    jwtSvidTtlSeconds: optNum(r.jwt_ttl),
    dnsNames: json<string[]>(r.dns_names),
    hint: String(r.hint ?? ""),
    federatesWith: jsonOr(r.federates_with, []),
    admin: flag(r.admin),
    createdAt: date(r.created_at),
  };
}

export function federationParams(f: FederationRecord) {
  return {
    trustDomain: f.trustDomain,
    url: f.bundleEndpointUrl,
    profile: f.profile,
    endpointId: f.endpointSpiffeId ?? null,
    webRoots: f.webRootsPem ?? null,
    bundle: f.bundle ?? null,
    sequence: f.bundleSequence ?? null,
    hint: f.refreshHintSeconds ?? null,
    lastAt: f.lastRefreshAt ? ms(f.lastRefreshAt) : null,
    outcome: f.lastOutcome ?? null,
    error: f.lastError ?? null,
    nextAt: ms(f.nextRefreshAt),
    createdAt: ms(f.createdAt),
    updatedAt: ms(f.updatedAt),
  };
}

export function federationFromRow(r: Row): FederationRecord {
  return {
    trustDomain: String(r.trust_domain),
    bundleEndpointUrl: String(r.bundle_endpoint_url),
    profile: String(r.profile) as FederationRecord["profile"],
    endpointSpiffeId: optStr(r.endpoint_spiffe_id),
    webRootsPem: optStr(r.web_roots_pem),
    bundle: optStr(r.bundle),
    bundleSequence: optNum(r.bundle_sequence),
    refreshHintSeconds: optNum(r.refresh_hint),
    lastRefreshAt: optDate(r.last_refresh_at),
    lastOutcome: optStr(r.last_outcome),
    lastError: optStr(r.last_error),
    nextRefreshAt: date(r.next_refresh_at),
    createdAt: date(r.created_at),
    updatedAt: date(r.updated_at),
  };
}

export function tokenFromRow(r: Row): JoinTokenRecord {
  return {
    tokenHash: String(r.token_hash),
    spiffeId: String(r.spiffe_id),
    expiresAt: date(r.expires_at),
    usedAt: optDate(r.used_at),
    createdAt: date(r.created_at),
  };
}

export function sessionFromRow(r: Row): AttestationSessionRecord {
  return {
    id: String(r.id),
    attestorType: String(r.attestor_type),
    nonce: r.nonce as Buffer,
    status: String(r.status) as SessionStatus,
    boundSpki: (r.bound_spki as Buffer | null) ?? undefined,
    state: r.state === null || r.state === undefined ? undefined : json<JsonObject>(r.state),
    expiresAt: date(r.expires_at),
    createdAt: date(r.created_at),
  };
}

export function accessTokenOf(r: Row): AccessTokenRecord {
  return {
    jti: String(r.jti),
    parentJti: optStr(r.parent_jti),
    delegationId: String(r.delegation_id),
    clientId: String(r.client_id),
    actorNodeId: String(r.actor_node_id),
    subject: String(r.subject),
    subjectIssuer: String(r.subject_issuer),
    scope: String(r.scope),
    audience: json<string[]>(r.audience),
    jkt: optStr(r.jkt),
    keyId: String(r.key_id),
    issuedAt: date(r.issued_at),
    expiresAt: date(r.expires_at),
    revokedAt: optDate(r.revoked_at),
  };
}

export const STATUS_TIME_COLUMN: Record<CaKeyStatus, string | undefined> = {
  pending: undefined,
  prepared: undefined,
  active: "activated_at",
  previous: undefined,
  retired: "retired_at",
};

export function upstreamChainColumn(chain: Buffer[] | undefined): string | null {
  return chain ? JSON.stringify(chain.map((c) => c.toString("base64"))) : null;
}

export function caKeyFromRow(r: Row): CaKeyRecord {
  return {
    id: String(r.id),
    kind: String(r.kind) as CaKeyKind,
    label: String(r.label),
    keyType: String(r.key_type),
    status: String(r.status) as CaKeyStatus,
    certificate: (r.certificate as Buffer | null) ?? undefined,
    upstreamChain:
      r.upstream_chain === null || r.upstream_chain === undefined
        ? undefined
        : (json<string[]>(r.upstream_chain)).map((b) => Buffer.from(b, "base64")),
    kid: optStr(r.kid),
    notAfter: optDate(r.not_after),
    createdAt: date(r.created_at),
    activatedAt: optDate(r.activated_at),
    retiredAt: optDate(r.retired_at),
  };
}

export function delegationFromRow(r: Row): DelegationRecord {
  return {
    id: String(r.id),
    actor: String(r.actor),
    subjectIssuer: String(r.subject_issuer),
    subject: optStr(r.subject),
    scopes: json<string[]>(r.scopes),
    audiences: json<string[]>(r.audiences),
    maxTtlSeconds: Number(r.max_ttl),
    requireDpop: flag(r.require_dpop),
    requireAttestor: optStr(r.require_attestor),
    createdAt: date(r.created_at),
  };
}


export const SVID_COLUMNS = "serial, spiffe_id, kind, node_id, ca_key_id, issued_at, not_after";

/** An issued SVID's column values, in the order of SVID_COLUMNS. */
export function svidRowValues(s: IssuedSvidRecord): unknown[] {
  return [s.serial, s.spiffeId, s.kind, s.nodeId ?? null, s.caKeyId, ms(s.issuedAt), ms(s.notAfter)];
}

/** An audit record's column values, in the order of AUDIT_COLUMNS (both engines insert with it). */
export function auditRowValues(r: AuditRecord): unknown[] {
  return [r.seq, ms(r.time), r.event, r.outcome, r.code ?? null, r.actor ?? null, r.spiffeId ?? null, r.attestor ?? null, r.serial ?? null, JSON.stringify(r.details), r.prevHash, r.hash];
}

export const AUDIT_COLUMNS = "seq, time, event, outcome, code, actor, spiffe_id, attestor, serial, details, prev_hash, hash";

export function auditFromRow(r: Row): AuditRecord {
  return {
    seq: Number(r.seq),
    time: date(r.time),
    event: String(r.event),
    outcome: String(r.outcome) as AuditRecord["outcome"],
    code: optStr(r.code),
    actor: optStr(r.actor),
    spiffeId: optStr(r.spiffe_id),
    attestor: optStr(r.attestor),
    serial: optStr(r.serial),
    details: json<Record<string, unknown>>(r.details),
    prevHash: String(r.prev_hash),
    hash: String(r.hash),
  };
}
