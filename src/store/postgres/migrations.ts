/**
 * Schema migrations for the PostgreSQL store, applied in order, each once, in a transaction
 * serialised by an advisory lock (schema.ts). Version N here gives the same logical schema as
 * version N of SQLite's list (../sqlite/migrations.ts): the same tables and column names, so that
 * one row mapper reads both and `hallmark store copy` moves rows column for column. Types:
 * times are bigint milliseconds since the epoch (as in SQLite), binary is bytea, lists and
 * attestor state are jsonb, flags are boolean; keys that lists are ordered by compare bytewise
 * (COLLATE "C"), as SQLite's do, whatever the database's locale. The audit record's `details` stay text: the hash
 * chain covers them, and text keeps exactly what was written. Never edit a migration that has
 * shipped: add a new one, at the same index as SQLite's.
 */
export const POSTGRES_MIGRATIONS: readonly string[] = [
  // 1
  `
  CREATE TABLE nodes (
    spiffe_id     TEXT COLLATE "C" PRIMARY KEY,
    attestor_type TEXT NOT NULL,
    hardware_id   TEXT,
    selectors     JSONB NOT NULL,
    can_reattest  BOOLEAN NOT NULL,
    serial        TEXT,
    expires_at    BIGINT,
    evicted       BOOLEAN NOT NULL DEFAULT false,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
  );
  CREATE TABLE entries (
    id             TEXT COLLATE "C" PRIMARY KEY,
    spiffe_id      TEXT NOT NULL,
    parent_id      TEXT NOT NULL,
    selectors      JSONB NOT NULL,
    x509_ttl       INTEGER,
    jwt_ttl        INTEGER,
    dns_names      JSONB NOT NULL,
    admin          BOOLEAN NOT NULL DEFAULT false,
    created_at     BIGINT NOT NULL,
    UNIQUE (spiffe_id, parent_id, selectors)
  );
  CREATE INDEX entries_parent ON entries(parent_id);
  CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY,
    spiffe_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE attestation_sessions (
    id            TEXT PRIMARY KEY,
    attestor_type TEXT NOT NULL,
    nonce         BYTEA NOT NULL,
    status        TEXT NOT NULL,
    bound_spki    BYTEA,
    state         JSONB,
    expires_at    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
  );
  CREATE TABLE issued_svids (
    serial     TEXT PRIMARY KEY,
    spiffe_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    node_id    TEXT,
    ca_key_id  TEXT NOT NULL,
    issued_at  BIGINT NOT NULL,
    not_after  BIGINT NOT NULL
  );
  CREATE INDEX issued_svids_key ON issued_svids(ca_key_id, not_after);
  CREATE TABLE ca_keys (
    id             TEXT COLLATE "C" PRIMARY KEY,
    kind           TEXT NOT NULL,
    label          TEXT NOT NULL UNIQUE,
    key_type       TEXT NOT NULL,
    status         TEXT NOT NULL,
    certificate    BYTEA,
    upstream_chain JSONB,
    kid            TEXT,
    not_after      BIGINT,
    created_at     BIGINT NOT NULL,
    activated_at   BIGINT,
    retired_at     BIGINT
  );
  CREATE TABLE bundle_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    sequence BIGINT NOT NULL
  );
  INSERT INTO bundle_state (id, sequence) VALUES (1, 0);
  CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    time      BIGINT NOT NULL,
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
  -- Append-only for the application, as in SQLite; the hash chain catches whoever bypasses it.
  CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
  CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
  CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
  `,
  // 2: node SVID supersession and bans.
  `
  ALTER TABLE nodes ADD COLUMN previous_serial TEXT;
  ALTER TABLE nodes ADD COLUMN previous_valid_until BIGINT;
  ALTER TABLE nodes ADD COLUMN evicted_at BIGINT;
  CREATE TABLE node_bans (
    spiffe_id     TEXT COLLATE "C" PRIMARY KEY,
    attestor_type TEXT NOT NULL,
    hardware_id   TEXT,
    created_at    BIGINT NOT NULL
  );
  CREATE INDEX node_bans_hardware ON node_bans(attestor_type, hardware_id);
  `,
  // 3: the entries' change log. A revision is taken from the one-row counter entry_revision
  // inside the writing transaction, not from a sequence: the row lock makes writers commit in
  // revision order, so a reader never sees revision n+1 before n commits (with a sequence, a slow
  // transaction holding n would be skipped for good by an agent that read n+1). The counter
  // never goes back, like SQLite's AUTOINCREMENT.
  `
  ALTER TABLE entries ADD COLUMN hint TEXT NOT NULL DEFAULT '';
  CREATE TABLE entry_changes (
    revision   BIGINT PRIMARY KEY,
    entry_id   TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('created', 'deleted')),
    parent_id  TEXT NOT NULL,
    selectors  JSONB NOT NULL,
    changed_at BIGINT NOT NULL
  );
  INSERT INTO entry_changes (revision, entry_id, kind, parent_id, selectors, changed_at)
    SELECT row_number() OVER (ORDER BY created_at, id), id, 'created', parent_id, selectors, created_at FROM entries;
  CREATE TABLE entry_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
  );
  INSERT INTO entry_revision (id, revision) SELECT 1, COUNT(*) FROM entry_changes;
  `,
  // 4: entries read by pages of one parent in id order.
  `
  CREATE INDEX entries_parent_id ON entries(parent_id, id);
  DROP INDEX entries_parent;
  `,
  // 5: DPoP proofs seen within their window.
  `
  CREATE TABLE dpop_proofs (
    key        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
  );
  CREATE INDEX dpop_proofs_expiry ON dpop_proofs(expires_at);
  `,
  // 6: delegations.
  `
  CREATE TABLE delegations (
    id               TEXT COLLATE "C" PRIMARY KEY,
    actor            TEXT NOT NULL,
    subject_issuer   TEXT NOT NULL,
    subject          TEXT,
    scopes           JSONB NOT NULL,
    audiences        JSONB NOT NULL,
    max_ttl          INTEGER NOT NULL,
    require_dpop     BOOLEAN NOT NULL,
    require_attestor TEXT,
    created_at       BIGINT NOT NULL
  );
  CREATE INDEX delegations_actor_issuer ON delegations(actor, subject_issuer);
  `,
  // 7: access tokens and their lineage.
  `
  CREATE TABLE access_tokens (
    jti            TEXT COLLATE "C" PRIMARY KEY,
    parent_jti     TEXT,
    delegation_id  TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    actor_node_id  TEXT NOT NULL,
    subject        TEXT NOT NULL,
    subject_issuer TEXT NOT NULL,
    scope          TEXT NOT NULL,
    audience       JSONB NOT NULL,
    jkt            TEXT,
    key_id         TEXT NOT NULL,
    issued_at      BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT
  );
  CREATE INDEX access_tokens_parent ON access_tokens(parent_jti);
  CREATE INDEX access_tokens_expiry ON access_tokens(expires_at);
  CREATE INDEX access_tokens_key ON access_tokens(key_id, expires_at);
  `,
  // 8: the transparency log's Merkle tree over the audit log.
  `
  CREATE TABLE tlog_hashes (
    level INTEGER NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
  );
  CREATE TABLE tlog_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    integrated_size  BIGINT NOT NULL,
    checkpoint       TEXT,
    checkpoint_size  BIGINT,
    checkpoint_root  BYTEA,
    checkpoint_at    BIGINT
  );
  INSERT INTO tlog_state (id, integrated_size) VALUES (1, 0);
  `,
  // 9: federation relationships; entries name the trust domains they federate with.
  `
  CREATE TABLE federations (
    trust_domain         TEXT COLLATE "C" PRIMARY KEY,
    bundle_endpoint_url  TEXT NOT NULL,
    profile              TEXT NOT NULL,
    endpoint_spiffe_id   TEXT,
    web_roots_pem        TEXT,
    bundle               TEXT,
    bundle_sequence      BIGINT,
    refresh_hint         BIGINT,
    last_refresh_at      BIGINT,
    last_outcome         TEXT,
    last_error           TEXT,
    next_refresh_at      BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
  );
  ALTER TABLE entries ADD COLUMN federates_with JSONB NOT NULL DEFAULT '[]';
  `,
];
