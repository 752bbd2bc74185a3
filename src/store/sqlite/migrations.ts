/**
 * Schema migrations for the embedded SQLite store, applied in order, each once, in a
 * transaction. Never edit a migration that has shipped: add a new one.
 */
export const SQLITE_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE nodes (
    spiffe_id     TEXT PRIMARY KEY,
    attestor_type TEXT NOT NULL,
    hardware_id   TEXT,
    selectors     TEXT NOT NULL,
    can_reattest  INTEGER NOT NULL,
    serial        TEXT,
    expires_at    INTEGER,
    evicted       INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
  );
  CREATE TABLE entries (
    id             TEXT PRIMARY KEY,
    spiffe_id      TEXT NOT NULL,
    parent_id      TEXT NOT NULL,
    selectors      TEXT NOT NULL,
    x509_ttl       INTEGER,
    jwt_ttl        INTEGER,
    dns_names      TEXT NOT NULL,
    admin          INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    UNIQUE (spiffe_id, parent_id, selectors)
  );
  CREATE INDEX entries_parent ON entries(parent_id);
  CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY,
    spiffe_id  TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE attestation_sessions (
    id            TEXT PRIMARY KEY,
    attestor_type TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    status        TEXT NOT NULL,
    bound_spki    BLOB,
    state         TEXT,
    expires_at    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
  );
  CREATE TABLE issued_svids (
    serial     TEXT PRIMARY KEY,
    spiffe_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    node_id    TEXT,
    ca_key_id  TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    not_after  INTEGER NOT NULL
  );
  CREATE INDEX issued_svids_key ON issued_svids(ca_key_id, not_after);
  CREATE TABLE ca_keys (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    label          TEXT NOT NULL UNIQUE,
    key_type       TEXT NOT NULL,
    status         TEXT NOT NULL,
    certificate    BLOB,
    upstream_chain TEXT,
    kid            TEXT,
    not_after      INTEGER,
    created_at     INTEGER NOT NULL,
    activated_at   INTEGER,
    retired_at     INTEGER
  );
  CREATE TABLE bundle_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    sequence INTEGER NOT NULL
  );
  INSERT INTO bundle_state (id, sequence) VALUES (1, 0);
  CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    time      INTEGER NOT NULL,
    event     TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    code      TEXT,
    actor     TEXT,
    spiffe_id TEXT,
    attestor  TEXT,
    serial    TEXT,
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
  );
  -- The audit log is append-only for the application; the hash chain catches anyone who
  -- bypasses these triggers with direct database access.
  CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
  CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
  `,
  // 2: node SVID supersession (the replaced SVID's short overlap, the eviction time) and bans.
  `
  ALTER TABLE nodes ADD COLUMN previous_serial TEXT;
  ALTER TABLE nodes ADD COLUMN previous_valid_until INTEGER;
  ALTER TABLE nodes ADD COLUMN evicted_at INTEGER;
  CREATE TABLE node_bans (
    spiffe_id     TEXT PRIMARY KEY,
    attestor_type TEXT NOT NULL,
    hardware_id   TEXT,
    created_at    INTEGER NOT NULL
  );
  CREATE INDEX node_bans_hardware ON node_bans(attestor_type, hardware_id);
  `,
  // 3: registration entry revisions, so that agents sync incrementally: every creation and deletion
  // is one row of a change log whose revision only grows (PostgreSQL: a bigserial). Deletions keep
  // the entry's parent and selectors, so the server can tell which nodes a tombstone concerns
  // without leaking it to others. Entries that exist already are logged as created, so an agent
  // starting from revision 0 sees them. Entries also get an optional `hint` for workloads.
  `
  ALTER TABLE entries ADD COLUMN hint TEXT NOT NULL DEFAULT '';
  CREATE TABLE entry_changes (
    revision   INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id   TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('created', 'deleted')),
    parent_id  TEXT NOT NULL,
    selectors  TEXT NOT NULL,
    changed_at INTEGER NOT NULL
  );
  INSERT INTO entry_changes (entry_id, kind, parent_id, selectors, changed_at)
    SELECT id, 'created', parent_id, selectors, created_at FROM entries ORDER BY created_at, id;
  `,
  // 4: the full entry list of a node is read by pages in id order (issue 10): (parent_id, id)
  // replaces the parent_id index it extends.
  `
  CREATE INDEX entries_parent_id ON entries(parent_id, id);
  DROP INDEX entries_parent;
  `,
  // 5: DPoP proofs seen within their window (issue 11, RFC 9449 §11.1): one row per (key
  // thumbprint, jti) digest until the proof's window closes; replicas share it through here.
  `
  CREATE TABLE dpop_proofs (
    key        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
  );
  CREATE INDEX dpop_proofs_expiry ON dpop_proofs(expires_at);
  `,
  // 6 (issue 11): delegations, who may act for whom. Scopes and audiences are JSON arrays like
  // the other list columns; the token endpoint looks delegations up by (actor, subject issuer).
  `
  CREATE TABLE delegations (
    id               TEXT PRIMARY KEY,
    actor            TEXT NOT NULL,
    subject_issuer   TEXT NOT NULL,
    subject          TEXT,
    scopes           TEXT NOT NULL,
    audiences        TEXT NOT NULL,
    max_ttl          INTEGER NOT NULL,
    require_dpop     INTEGER NOT NULL,
    require_attestor TEXT,
    created_at       INTEGER NOT NULL
  );
  CREATE INDEX delegations_actor_issuer ON delegations(actor, subject_issuer);
  `,
  // 7 (delegation, issue 11): the access tokens Hallmark issued and their lineage (parent_jti),
  // so that revoking a token, deleting its delegation or evicting its actor's node makes every
  // token derived from it inactive. The lineage is walked with a recursive CTE (PostgreSQL runs
  // the same). JWT-SVIDs now carry a jti and are recorded as 'jwt-<jti>', found again by it when
  // a JWT-SVID authenticates an OAuth client.
  `
  CREATE TABLE access_tokens (
    jti            TEXT PRIMARY KEY,
    parent_jti     TEXT,
    delegation_id  TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    actor_node_id  TEXT NOT NULL,
    subject        TEXT NOT NULL,
    subject_issuer TEXT NOT NULL,
    scope          TEXT NOT NULL,
    audience       TEXT NOT NULL,
    jkt            TEXT,
    key_id         TEXT NOT NULL,
    issued_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    revoked_at     INTEGER
  );
  CREATE INDEX access_tokens_parent ON access_tokens(parent_jti);
  CREATE INDEX access_tokens_expiry ON access_tokens(expires_at);
  CREATE INDEX access_tokens_key ON access_tokens(key_id, expires_at);
  `,
  // 8 (transparency log, issue 12): the Merkle tree over the audit log. Every audit record is a
  // leaf (index = seq - 1); tlog_hashes holds the hash of every complete, aligned subtree (level,
  // index), written by the integrator in the same transaction as the new integrated size. The tree
  // is derived from audit_log, never a second source of truth: dropping both tables and
  // integrating again gives the same hashes. tlog_state is one row: how far the tree reaches and
  // the last checkpoint the server signed (its text, size and root), which every later one extends.
  `
  CREATE TABLE tlog_hashes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
  );
  CREATE TABLE tlog_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    integrated_size  INTEGER NOT NULL,
    checkpoint       TEXT,
    checkpoint_size  INTEGER,
    checkpoint_root  BLOB,
    checkpoint_at    INTEGER
  );
  INSERT INTO tlog_state (id, integrated_size) VALUES (1, 0);
  `,
  // 9 (federation, issue 14): relationships with foreign trust domains, one row each, holding the
  // endpoint parameters (SPIFFE Federation §5.2), the last good bundle (JSON text) with its
  // sequence and refresh hint, and the outcome of the last refresh; entries name the foreign
  // trust domains their workloads federate with (a JSON array, like the other list columns).
  `
  CREATE TABLE federations (
    trust_domain         TEXT PRIMARY KEY,
    bundle_endpoint_url  TEXT NOT NULL,
    profile              TEXT NOT NULL,
    endpoint_spiffe_id   TEXT,
    web_roots_pem        TEXT,
    bundle               TEXT,
    bundle_sequence      INTEGER,
    refresh_hint         INTEGER,
    last_refresh_at      INTEGER,
    last_outcome         TEXT,
    last_error           TEXT,
    next_refresh_at      INTEGER NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
  );
  ALTER TABLE entries ADD COLUMN federates_with TEXT NOT NULL DEFAULT '[]';
  `,
];
