/**
 * The datastore seam: one small repository per entity, all async so that the PostgreSQL
 * implementation fits the same interface as the embedded SQLite one. Only src/store knows SQL.
 * Times are Date; binary values are Buffer; JSON-ish values are typed objects.
 */
import type { JsonObject } from "../attestors/types.js";

export interface NodeRecord {
  spiffeId: string;
  attestorType: string;
  /** Stable hardware identifier (EK hash, chip id…); undefined for join-token nodes. */
  hardwareId?: string | undefined;
  selectors: string[];
  canReattest: boolean;
  /** Serial and expiry of the node's current SVID: the only node SVID the server accepts. */
  serial?: string | undefined;
  expiresAt?: Date | undefined;
  /**
   * The SVID this one replaced, still accepted until `previousValidUntil` so that requests in
   * flight during a rotation finish (svid.nodeRenewalOverlap). Never set across an eviction.
   */
  previousSerial?: string | undefined;
  previousValidUntil?: Date | undefined;
  evicted: boolean;
  evictedAt?: Date | undefined;
  createdAt: Date;
  updatedAt: Date;
}

/**
 * A ban refuses re-attestation of a node: by its SPIFFE ID (join-token nodes, whose ID is all
 * they have) and, for hardware nodes, by the attestor's stable hardware identifier, so a banned
 * TPM cannot come back under another ID template either.
 */
export interface NodeBanRecord {
  spiffeId: string;
  attestorType: string;
  hardwareId?: string | undefined;
  createdAt: Date;
}

export interface NodeRepository {
  get(spiffeId: string): Promise<NodeRecord | undefined>;
  /** Inserts or replaces the node's record (re-attestation updates selectors and SVID). */
  upsert(node: NodeRecord): Promise<void>;
  list(): Promise<NodeRecord[]>;
  /**
   * Marks evicted and forgets the overlap SVID; returns false when absent. An evicted node must
   * attest anew to return, and then only its new SVID is accepted.
   */
  evict(spiffeId: string, at: Date): Promise<boolean>;
  delete(spiffeId: string): Promise<boolean>;
  /** Records a ban (replacing one for the same SPIFFE ID). */
  ban(ban: NodeBanRecord): Promise<void>;
  /** Lifts the ban on this SPIFFE ID; false when there was none. */
  unban(spiffeId: string): Promise<boolean>;
  /** The ban that covers this SPIFFE ID or this attestor's hardware identifier, if any. */
  findBan(spiffeId: string, attestorType: string, hardwareId: string | undefined): Promise<NodeBanRecord | undefined>;
  listBans(): Promise<NodeBanRecord[]>;
}

export interface EntryRecord {
  id: string;
  spiffeId: string;
  parentId: string;
  selectors: string[];
  x509SvidTtlSeconds?: number | undefined;
  jwtSvidTtlSeconds?: number | undefined;
  dnsNames: string[];
  /** Passed to workloads with their SVIDs (Workload API `hint`), "" when none. */
  hint?: string | undefined;
  /** Foreign trust domains (names, sorted) whose bundles this entry's workloads receive (issue 14). */
  federatesWith?: string[] | undefined;
  /**
   * Reserved for an admin API over mTLS that does not exist: nothing grants anything on it, so
   * nothing sets it (always false; the column stays so no migration is needed to bring it back).
   */
  admin: boolean;
  createdAt: Date;
}

export interface EntryRepository {
  create(entry: EntryRecord): Promise<void>;
  get(id: string): Promise<EntryRecord | undefined>;
  list(filter?: { parentId?: string; spiffeId?: string }): Promise<EntryRecord[]>;
  /**
   * Entries with this SPIFFE ID under any of these parents (a node and the server, whose children
   * are node aliases), oldest first: one read through the (spiffe_id, parent_id) index, whatever
   * the parents' entry counts.
   */
  listForSpiffeId(spiffeId: string, parentIds: readonly string[]): Promise<EntryRecord[]>;
  /** Entries of one parent in id order, after `afterId` (exclusive), at most `limit`: a page read through the (parent_id, id) index. */
  listByParent(parentId: string, afterId: string | undefined, limit: number): Promise<EntryRecord[]>;
  /** Deletes the entry and logs a tombstone (dated `at`) in one transaction. */
  delete(id: string, at: Date): Promise<boolean>;
  /**
   * At most `limit` changes after `revision`, oldest first; undefined when `revision` is not one
   * this log can continue from (older than what it retains, or newer than its head: a restored
   * database), so the caller starts over from a full list.
   */
  changesSince(revision: number, limit: number): Promise<EntryChangePage | undefined>;
  /** The revision of the latest change (0 before any). */
  revision(): Promise<number>;
  /** Forgets changes made before `before`; agents behind them get a full list. The revision never goes back. */
  pruneChanges(before: Date): Promise<number>;
}

/** One creation or deletion in the entries' change log. */
export interface EntryChange {
  revision: number;
  kind: "created" | "deleted";
  entryId: string;
  /** The entry's parent and selectors, kept for deletions: who the change concerns. */
  parentId: string;
  selectors: string[];
  /** The entry, for a creation whose entry still exists (a later tombstone follows otherwise). */
  entry?: EntryRecord | undefined;
}

export interface EntryChangePage {
  changes: EntryChange[];
  /** The revision to continue from: the last change returned, or the head when none. */
  revision: number;
  /** True when changes after `revision` remain (the page was full). */
  more: boolean;
}

export interface JoinTokenRecord {
  /** SHA-256 of the token, hex: the token itself is never stored. */
  tokenHash: string;
  spiffeId: string;
  expiresAt: Date;
  usedAt?: Date | undefined;
  createdAt: Date;
}

export type ConsumeOutcome = "consumed" | "not_found" | "expired" | "used";

export interface JoinTokenRepository {
  create(token: JoinTokenRecord): Promise<void>;
  /** Atomically marks the token used if it exists, is unexpired and unused. */
  consume(tokenHash: string, now: Date): Promise<{ outcome: ConsumeOutcome; record?: JoinTokenRecord }>;
  get(tokenHash: string): Promise<JoinTokenRecord | undefined>;
  purgeExpired(now: Date): Promise<number>;
}

export type SessionStatus = "open" | "challenged" | "done";

export interface AttestationSessionRecord {
  id: string;
  attestorType: string;
  nonce: Buffer;
  status: SessionStatus;
  /** Set once evidence arrives: the key the evidence is bound to. */
  boundSpki?: Buffer | undefined;
  /** Attestor round state between challenge and answer. */
  state?: JsonObject | undefined;
  expiresAt: Date;
  createdAt: Date;
}

export interface SessionRepository {
  create(session: AttestationSessionRecord): Promise<void>;
  get(id: string): Promise<AttestationSessionRecord | undefined>;
  /**
   * Compare-and-set: moves a session from `from` to `to` (with new state/boundSpki) only if it is
   * in `from` and unexpired at `now`. This is what makes every nonce single use across replicas.
   */
  transition(
    id: string,
    from: SessionStatus,
    to: SessionStatus,
    now: Date,
    update?: { state?: JsonObject | undefined; boundSpki?: Buffer | undefined },
  ): Promise<ConsumeOutcome>;
  purgeExpired(now: Date): Promise<number>;
}

export interface IssuedSvidRecord {
  serial: string;
  spiffeId: string;
  kind: "x509" | "jwt" | "wit";
  /** The node that asked (undefined for the node's own SVID). */
  nodeId?: string | undefined;
  caKeyId: string;
  issuedAt: Date;
  notAfter: Date;
}

export interface SvidRepository {
  record(svid: IssuedSvidRecord): Promise<void>;
  get(serial: string): Promise<IssuedSvidRecord | undefined>;
  /** Latest notAfter among SVIDs signed by this key: when it may retire. */
  latestExpiry(caKeyId: string): Promise<Date | undefined>;
  countByKind(): Promise<Record<string, number>>;
}

/**
 * x509: the CA key; jwt: the JWT-SVID key; wit: the WIT-SVID key (a bundle key has one `use`, so
 * each kind has its own); token: the OAuth access-token key (RFC 9068), published in the plain
 * JWKS at /oauth2/jwks and never in the SPIFFE bundle, since access tokens are not SVIDs.
 */
export type CaKeyKind = "x509" | "jwt" | "wit" | "token";
/**
 * pending: the intent to create this key, recorded before the HSM is asked to generate it; never
 * published, never signing, and not listed by `list` (a start destroys whatever the HSM holds under
 * its label and discards the record). prepared: in the bundle, not signing. active: signing.
 * previous: in the bundle until its last SVID expires. retired: gone.
 */
export type CaKeyStatus = "pending" | "prepared" | "active" | "previous" | "retired";

export interface CaKeyRecord {
  id: string;
  kind: CaKeyKind;
  /** HSM label of the key pair. */
  label: string;
  keyType: string;
  status: CaKeyStatus;
  /** X.509 CA: the CA certificate (DER) and its chain to the upstream root (DER, issuer first), if any. */
  certificate?: Buffer | undefined;
  upstreamChain?: Buffer[] | undefined;
  /** JWT and WIT keys: the `kid`. */
  kid?: string | undefined;
  notAfter?: Date | undefined;
  createdAt: Date;
  activatedAt?: Date | undefined;
  retiredAt?: Date | undefined;
}

export interface CaKeyRepository {
  /** Every key that was ever prepared, oldest first; pending records (unfinished creations) are left out. */
  list(kind?: CaKeyKind): Promise<CaKeyRecord[]>;
  /** The pending records: creations a crash or failure interrupted (or one under way). */
  listPending(): Promise<CaKeyRecord[]>;
  get(id: string): Promise<CaKeyRecord | undefined>;
  insert(record: CaKeyRecord): Promise<void>;
  /** Completes a pending record: its certificate, chain, kid and notAfter, status prepared. Fails unless it is pending. */
  markPrepared(record: CaKeyRecord): Promise<void>;
  /** Deletes a record only while it is pending (never a key that was published); false when there was none. */
  discardPending(id: string): Promise<boolean>;
  /** Changes status (and the matching timestamp). */
  setStatus(id: string, status: CaKeyStatus, at: Date): Promise<void>;
  /** The bundle's sequence number: bumped on every change of published keys. */
  bumpBundleSequence(): Promise<number>;
  bundleSequence(): Promise<number>;
}

/**
 * Who may act for whom (RFC 8693 delegation): an attested agent (`actor`) may exchange the
 * tokens of `subjectIssuer`'s subjects (or of one `subject`) for access tokens of at most these
 * scopes and audiences, living at most `maxTtlSeconds`. Administered by `hallmark delegation`.
 */
export interface DelegationRecord {
  /** A random UUID. */
  id: string;
  /** The agent's SPIFFE ID, in the server's trust domain. */
  actor: string;
  /** `iss` of the subject tokens: a configured subject issuer, or Hallmark's own issuer for chains. */
  subjectIssuer: string;
  /** One person's `sub`; undefined = any subject of that issuer. */
  subject?: string | undefined;
  /** The most the actor may get: scope tokens (RFC 6749 §3.3), no spaces. */
  scopes: string[];
  /** Allowed audiences/resources: absolute URIs or logical names. */
  audiences: string[];
  maxTtlSeconds: number;
  requireDpop: boolean;
  /** An attestor type ("tpm"…) the actor's node must have attested with. */
  requireAttestor?: string | undefined;
  createdAt: Date;
}

export interface DelegationRepository {
  create(d: DelegationRecord): Promise<void>;
  get(id: string): Promise<DelegationRecord | undefined>;
  /** Oldest first (created, then id). */
  list(filter?: { actor?: string }): Promise<DelegationRecord[]>;
  delete(id: string): Promise<boolean>;
  /** Delegations of this actor for this subject issuer that cover this subject (subject null or equal), oldest first. */
  findFor(actor: string, subjectIssuer: string, subject: string): Promise<DelegationRecord[]>;
}

/**
 * An access token Hallmark issued (RFC 9068), kept so that introspection can follow its lineage:
 * the token it was exchanged from (`parentJti`, when the subject token was one of ours), the
 * delegation that allowed it, and the node its actor's SVID was issued to. A token is active only
 * while no link of that chain is revoked, its delegation exists and its actor's node is not
 * evicted. The token itself is never stored.
 */
export interface AccessTokenRecord {
  jti: string;
  parentJti?: string | undefined;
  delegationId: string;
  /** The actor: the client's SPIFFE ID. */
  clientId: string;
  /** The node (SPIFFE ID) the actor's SVID was issued to. */
  actorNodeId: string;
  subject: string;
  subjectIssuer: string;
  /** Space-separated, as in the token. */
  scope: string;
  audience: string[];
  /** RFC 7638 thumbprint of the DPoP key, when the token is DPoP-bound. */
  jkt?: string | undefined;
  /** The `token` CA key that signed it: a key retires once its last token has expired. */
  keyId: string;
  issuedAt: Date;
  expiresAt: Date;
  revokedAt?: Date | undefined;
}

/** At most this many links are read when a token's lineage is walked (delegation.maxActDepth is at most 16). */
export const MAX_LINEAGE_LINKS = 32;

export interface AccessTokenRepository {
  record(token: AccessTokenRecord): Promise<void>;
  get(jti: string): Promise<AccessTokenRecord | undefined>;
  /**
   * The token and its ancestors, the token first, then its parent, and so on up to a token with
   * no parent (or MAX_LINEAGE_LINKS links). A chain whose last record still names a parent is
   * broken (the parent was purged): callers treat that as inactive.
   */
  lineage(jti: string): Promise<AccessTokenRecord[]>;
  /** Marks the token revoked at `at` unless it already is; false when there is no such token. Descendants follow through `lineage`. */
  revoke(jti: string, at: Date): Promise<boolean>;
  /** The jtis of the tokens exchanged from this one, at any depth (not the token itself). */
  descendants(jti: string): Promise<string[]>;
  /** Latest expiry among tokens signed by this key: when it may retire. */
  latestExpiry(keyId: string): Promise<Date | undefined>;
  /** Forgets tokens expired before `now` (a child never outlives its parent, so no live lineage breaks). */
  purgeExpired(now: Date): Promise<number>;
}

export interface AuditRecordInput {
  time: Date;
  /** attest, issue_x509, issue_jwt, refuse, token_create, entry_create, entry_delete, node_evict, ca_rotate… */
  event: string;
  outcome: "success" | "refused" | "error";
  code?: string | undefined;
  /** Who asked: node SPIFFE ID, "admin:socket", peer address… */
  actor?: string | undefined;
  spiffeId?: string | undefined;
  attestor?: string | undefined;
  serial?: string | undefined;
  /** What was checked (claims, policy, evidence digest). Never secrets or raw evidence. */
  details: Record<string, unknown>;
}

export interface AuditRecord extends AuditRecordInput {
  seq: number;
  prevHash: string;
  hash: string;
}

/** The `prevHash` of the first audit record. */
export const AUDIT_GENESIS_HASH = "0".repeat(64);

/** One record to append, with the SVID record an issuance's success commits with it. */
export interface AuditAppend {
  input: AuditRecordInput;
  svid?: IssuedSvidRecord | undefined;
}

/** The hash of `input` placed at `seq` after the record hashed `prevHash` (AuditLog's chain rule). */
export type AuditHasher = (input: AuditRecordInput, prevHash: string, seq: number) => string;

export interface AuditRepository {
  /**
   * Appends records in one transaction (AuditLog's group commit; a single append is a batch of
   * one): reads the last hash, then chains the records in the order given, seqs contiguous, every
   * item's SVID record written in the same transaction. All or nothing: one failing item (a serial
   * recorded already) fails the whole batch and writes nothing. Returns the records in order.
   */
  appendBatch(items: readonly AuditAppend[], hashRecord: AuditHasher): Promise<AuditRecord[]>;
  /** In seq order, from `afterSeq`, at most `limit`. */
  list(afterSeq: number, limit: number): Promise<AuditRecord[]>;
  /** The last `limit` records, in seq order. */
  tail(limit: number): Promise<AuditRecord[]>;
  /** How many records there are and the highest seq (0 when none): equal unless records were removed. */
  extent(): Promise<{ count: number; lastSeq: number }>;
}

/**
 * DPoP proofs seen within their acceptance window (RFC 9449 §11.1), shared by every replica of
 * the server through the datastore: a proof replayed to another replica is caught too. Keys are
 * digests of (key thumbprint, jti); nothing of the proof itself is stored.
 */
export interface DpopProofRepository {
  /**
   * Atomically remembers `key` until `until` and answers true, unless it is remembered already
   * and unexpired at `now` (a replay): then false and nothing changes. An expired record is
   * taken over, so purging is housekeeping, not correctness.
   */
  remember(key: string, until: Date, now: Date): Promise<boolean>;
  purgeExpired(now: Date): Promise<number>;
}

export type FederationProfile = "https_web" | "https_spiffe";

/**
 * A federation relationship (SPIFFE Federation §6.1): where the foreign trust domain publishes
 * its bundle and how that endpoint is authenticated, with the last good bundle and what the last
 * refresh did. The bundle is kept as the JSON text that was validated, so what workloads receive
 * is exactly what the peer published.
 */
export interface FederationRecord {
  /** The foreign trust domain's name (the key). */
  trustDomain: string;
  bundleEndpointUrl: string;
  profile: FederationProfile;
  /** https_spiffe: the SPIFFE ID the endpoint's X509-SVID must carry. */
  endpointSpiffeId?: string | undefined;
  /** https_web: PEM roots the endpoint's certificate must chain to; undefined = Node's bundled Web PKI roots. */
  webRootsPem?: string | undefined;
  /** The current (last good) SPIFFE bundle, JSON text; undefined until one is known. */
  bundle?: string | undefined;
  bundleSequence?: number | undefined;
  refreshHintSeconds?: number | undefined;
  lastRefreshAt?: Date | undefined;
  /** "ok", "unchanged" or the refusal's code. */
  lastOutcome?: string | undefined;
  lastError?: string | undefined;
  nextRefreshAt: Date;
  createdAt: Date;
  updatedAt: Date;
}

/** The outcome of one refresh: always its time and result, and a new bundle only when one was adopted. */
export interface FederationRefreshRecord {
  at: Date;
  outcome: string;
  error?: string | undefined;
  nextRefreshAt: Date;
  bundle?: { json: string; sequence: number | undefined; refreshHintSeconds: number | undefined } | undefined;
}

export interface FederationRepository {
  /** Fails with federation_exists when the trust domain has a relationship already. */
  create(r: FederationRecord): Promise<void>;
  get(trustDomain: string): Promise<FederationRecord | undefined>;
  /** In trust domain order. */
  list(): Promise<FederationRecord[]>;
  /** Replaces the endpoint parameters (and the bundle, when `bundle` is set); false when absent. */
  update(r: FederationRecord): Promise<boolean>;
  delete(trustDomain: string): Promise<boolean>;
  recordRefresh(trustDomain: string, refresh: FederationRefreshRecord): Promise<void>;
  /** Relationships whose next refresh is due at `now`. */
  due(now: Date): Promise<FederationRecord[]>;
}

/**
 * The transparency log's Merkle tree over the audit log (issue 12): the stored subtree hashes and
 * one state row. Written only by the integrator and the checkpoint signer, each write a
 * compare-and-set on the state it read, so replicas sharing one datastore never fork the tree
 * (the loser of a race writes nothing and reads again). Levels and indexes follow
 * src/transparency/merkle.ts (level L, index i: leaves [i·2^L, (i+1)·2^L)).
 */
export interface TlogStoredHash {
  level: number;
  index: number;
  hash: Buffer;
}

export interface TlogSignedCheckpoint {
  /** The signed note, exactly as served. */
  text: string;
  treeSize: number;
  rootHash: Buffer;
  signedAt: Date;
}

export interface TlogState {
  /** Leaves whose hashes are stored: the audit records with seq ≤ integratedSize. */
  integratedSize: number;
  /** The last checkpoint signed; undefined before the first. */
  checkpoint?: TlogSignedCheckpoint | undefined;
}

export interface TransparencyRepository {
  state(): Promise<TlogState>;
  /** The stored hashes, in the order asked; undefined where none is stored. One snapshot. */
  readHashes(ids: readonly { level: number; index: number }[]): Promise<Array<Buffer | undefined>>;
  /**
   * Stores `hashes` and moves the integrated size from `fromSize` to `toSize`, in one
   * transaction; false (nothing written) when the integrated size is no longer `fromSize`.
   */
  integrate(fromSize: number, toSize: number, hashes: readonly TlogStoredHash[]): Promise<boolean>;
  /**
   * Replaces the last signed checkpoint; false (nothing written) when the stored one's tree size
   * is no longer `previousSize` (undefined: none yet) or the new one reaches past the integrated size.
   */
  saveCheckpoint(previousSize: number | undefined, checkpoint: TlogSignedCheckpoint): Promise<boolean>;
}

export interface Store {
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
  /** What server replicas sharing this datastore need of each other: change notices and a common lock. */
  readonly coordination: StoreCoordination;
  /** False while the datastore refuses writes (disk full, I/O errors): the server is not ready. */
  healthy(): boolean;
  /**
   * Writes a consistent snapshot of the whole datastore to `path` (mode 0600, temp file then
   * rename) while it stays in use: the file is a database Hallmark opens as it is.
   */
  backup(path: string): Promise<void>;
  close(): Promise<void>;
}

/** What a change notice is about: the registration entries, or the CA keys and bundle sequence. */
export type ChangeTopic = "entries" | "caKeys";

/**
 * Replicas sharing one datastore. SQLite: one server owns the data directory, so notices are the
 * process's own writes and the lock is a no-op. PostgreSQL: notices are NOTIFYs sent in the
 * writing transaction and heard by every replica (its own writes included), and the lock is an
 * advisory lock every replica respects.
 */
export interface StoreCoordination {
  /**
   * Calls `listener` after a change of `topic` committed by any replica, and also after the
   * notice channel was lost and is back (changes may have been missed). Returns the unsubscribe.
   */
  onChange(topic: ChangeTopic, listener: () => void): () => void;
  /** Runs `body` holding the lock `name` across every replica of the datastore (one holder at a time). */
  exclusively<T>(name: string, body: () => Promise<T>): Promise<T>;
}
