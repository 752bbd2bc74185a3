import type { ErrorTable } from "./errors.js";

/** Codes of the issuance core: request validation, sessions, issuance, admin, config. */
export const CORE_ERRORS = {
  // request shape
  invalid_request: { status: 400, title: "The request is malformed" },
  body_too_large: { status: 413, title: "The request body is too large" },
  unsupported_media_type: { status: 415, title: "The request body must be JSON" },
  not_found: { status: 404, title: "No such resource" },
  method_not_allowed: { status: 405, title: "Method not allowed" },
  // refused by the HTTP parser before a route sees the request (src/api/problem.ts)
  headers_too_large: { status: 431, title: "The request headers are too large" },
  request_timeout: { status: 408, title: "The request took too long to arrive" },
  expectation_failed: { status: 417, title: "The Expect header asks for something other than 100-continue" },
  // SPIFFE IDs
  invalid_spiffe_id: { status: 400, title: "The SPIFFE ID is invalid" },
  invalid_trust_domain: { status: 400, title: "The trust domain is invalid" },
  spiffe_id_outside_trust_domain: { status: 403, title: "The SPIFFE ID is outside this trust domain" },
  spiffe_id_reserved: { status: 403, title: "The SPIFFE ID is reserved for the server or a node" },
  // attestation sessions
  unknown_attestor: { status: 400, title: "Unknown attestor type" },
  attestor_disabled: { status: 403, title: "This attestor is not enabled on this server" },
  session_not_found: { status: 404, title: "No such attestation session" },
  session_expired: { status: 403, title: "The attestation session has expired" },
  session_used: { status: 403, title: "The attestation session was already used" },
  session_attestor_mismatch: { status: 400, title: "The session was opened for another attestor" },
  session_wrong_round: { status: 409, title: "The attestation session is not waiting for this step" },
  invalid_evidence: { status: 400, title: "The evidence is malformed" },
  cbor_malformed: { status: 400, title: "The CBOR encoding is malformed" },
  evidence_too_large: { status: 413, title: "The evidence is too large" },
  hardware_identity_changed: { status: 403, title: "This node previously attested with different hardware" },
  node_evicted: { status: 403, title: "This node has been evicted" },
  node_banned: { status: 403, title: "This node is banned from attesting" },
  node_svid_superseded: { status: 401, title: "This node SVID was replaced by a newer one" },
  node_svid_expired: { status: 401, title: "This node SVID has expired" },
  reattestation_required: { status: 403, title: "This node must attest again with fresh evidence to renew" },
  ambiguous_spiffe_id: { status: 400, title: "Several entries match: name the SPIFFE ID" },
  // join tokens
  join_token_invalid: { status: 403, title: "The join token is unknown" },
  join_token_expired: { status: 403, title: "The join token has expired" },
  join_token_used: { status: 403, title: "The join token was already used" },
  // CSRs and issuance
  csr_malformed: { status: 400, title: "The CSR cannot be parsed" },
  csr_signature_invalid: { status: 400, title: "The CSR signature does not verify" },
  csr_key_unsupported: { status: 400, title: "The CSR key type is not accepted" },
  csr_requests_ca: { status: 400, title: "The CSR asks for a CA certificate" },
  csr_san_not_allowed: { status: 403, title: "The CSR names an identity the caller may not have" },
  csr_key_not_bound: { status: 403, title: "The CSR key is not the key the evidence is bound to" },
  not_entitled: { status: 403, title: "The caller is not entitled to this SPIFFE ID" },
  no_entries: { status: 404, title: "No registration entry matches" },
  invalid_audience: { status: 400, title: "The audience is invalid" },
  ttl_invalid: { status: 400, title: "The TTL is invalid" },
  // the workload's public key a WIT-SVID binds (cnf.jwk; src/issuer/wit-svid.ts)
  wit_key_malformed: { status: 400, title: "The public key is not a well-formed public JWK with an alg" },
  wit_key_private: { status: 400, title: "The JWK carries private key members: send only the public key" },
  wit_key_unsupported: { status: 400, title: "The key type, curve, size or alg is not one the WIT-SVID standard allows" },
  // authentication
  client_cert_required: { status: 401, title: "A client certificate is required" },
  client_cert_invalid: { status: 401, title: "The client certificate is not valid for this trust domain" },
  // channel-bound node authentication (src/api/node-proof.ts): a TPM-resident node key signs the
  // TLS exporter value of its connection instead of a client certificate handshake
  node_proof_invalid: { status: 401, title: "The node proof does not verify over this TLS connection's exported keying material" },
  node_proof_svid_invalid: { status: 401, title: "The SVID chain sent with the node proof is not valid for this trust domain" },
  node_proof_requires_tls13: { status: 401, title: "Node proofs are accepted on TLS 1.3 connections only" },
  node_proof_conflict: { status: 400, title: "A request carries both a client certificate and a node proof" },
  admin_required: { status: 403, title: "This endpoint is for administrators" },
  // client side: the server did not prove its identity against the trust bundle
  server_untrusted: { status: 502, title: "The server's certificate does not verify against the trust bundle" },
  // entries, nodes
  entry_exists: { status: 409, title: "An identical registration entry exists" },
  entry_not_found: { status: 404, title: "No such registration entry" },
  node_not_found: { status: 404, title: "No such node" },
  invalid_selector: { status: 400, title: "The selector is invalid" },
  // CA and HSM
  svid_nonconformant: { status: 500, title: "An issued certificate failed the SPIFFE conformance check" },
  bundle_malformed: { status: 400, title: "The SPIFFE bundle is malformed" },
  ca_not_ready: { status: 503, title: "The certificate authority is not ready" },
  ca_rotation_in_progress: { status: 409, title: "A CA rotation step is already pending" },
  ca_rotation_nothing_prepared: { status: 409, title: "No prepared key to activate" },
  hsm_unavailable: { status: 503, title: "The HSM is unavailable" },
  hsm_login_failed: { status: 500, title: "The HSM refused the PIN" },
  hsm_key_not_found: { status: 500, title: "The HSM key was not found" },
  hsm_module_not_found: { status: 500, title: "The PKCS#11 module was not found" },
  hsm_token_not_found: { status: 500, title: "The PKCS#11 token was not found" },
  hsm_error: { status: 500, title: "The HSM failed" },
  hsm_key_exists: { status: 409, title: "A key with this label already exists" },
  hsm_scheme_mismatch: { status: 500, title: "The signature scheme does not fit the key type" },
  hsm_key_type_unsupported: { status: 500, title: "The key type is not supported by this HSM layer" },
  // the token lacks a mechanism the configured key types need (checked at start)
  hsm_mechanism_missing: { status: 500, title: "The HSM lacks a mechanism the configured keys need" },
  // `hallmark hsm init`: a token with this label exists already, or the module is not SoftHSM2
  hsm_token_exists: { status: 409, title: "A token with this label already exists" },
  hsm_init_unsupported: { status: 500, title: "Token initialisation is only for SoftHSM2; use the HSM vendor's tools" },
  // configuration
  config_invalid: { status: 500, title: "The configuration is invalid" },
  // files and credentials named on the command line (the CLI and client library; never sent over HTTP)
  file_unreadable: { status: 400, title: "A file named on the command line cannot be read" },
  svid_key_mismatch: { status: 400, title: "The private key does not belong to the SVID" },
  svid_unreadable: { status: 400, title: "The SVID or its key is not a PEM certificate or private key" },
  // a DPoP key (--dpop-key) that is not a PEM private key of a type proofs are signed with (EC, Ed25519)
  dpop_key_unreadable: { status: 400, title: "The DPoP key is not a usable PEM private key" },
  // start-up: the data directory and the datastore in it (named, with the reason, in the message)
  data_dir_in_use: { status: 409, title: "The data directory is in use by another server" },
  datastore_open_failed: { status: 503, title: "The datastore cannot be opened" },
  // operations: the database from a newer Hallmark (refused at start, left untouched); backups
  store_too_new: { status: 500, title: "The database was written by a newer Hallmark" },
  backup_failed: { status: 500, title: "The backup could not be written" },
  backup_exists: { status: 409, title: "The backup file exists already" },
  // the PostgreSQL datastore (issue 13): a schema behind this build under --no-migrate; a copy
  // onto a database that holds rows already; a backup asked of PostgreSQL (pg_dump's job)
  store_schema_behind: { status: 503, title: "The database schema is older than this Hallmark and migrations are off" },
  store_not_empty: { status: 409, title: "The target datastore is not empty" },
  store_copy_failed: { status: 500, title: "The datastore copy failed; the target was left empty" },
  backup_unsupported: { status: 409, title: "This datastore is backed up with its own tools (pg_dump)" },
  // audit
  audit_chain_broken: { status: 500, title: "The audit chain does not verify" },
  /** One full verification at a time: each walks the whole log in its own worker thread. */
  audit_verify_running: { status: 409, title: "An audit verification is already running" },
  // datastore
  /** The database was migrated by a newer Hallmark: neither migrated back nor read by guesswork. */
  // catch-all, never exposed in detail
  internal: { status: 500, title: "Internal error" },
  unavailable: { status: 503, title: "Service unavailable" },
  // the datastore refuses writes or reads (disk full, I/O error, read-only, locked too long)
  store_unavailable: { status: 503, title: "The datastore is unavailable" },
  rate_limited: { status: 429, title: "Too many requests" },
} as const satisfies ErrorTable;
