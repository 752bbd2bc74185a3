import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { HallmarkError } from "../errors.js";
import { readInputText } from "../input-file.js";
import { DNS_NAME, ipAddressBytes } from "../pki/subject-names.js";
import { TrustDomain } from "../spiffe/id.js";
import { durationSeconds } from "./duration.js";
import { configError } from "./errors.js";

const keyType = z.enum(["ec-p256", "ec-p384", "rsa-2048", "rsa-3072"]);

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be HOST:PORT");

/** An issuer URL relying parties compare byte for byte (OIDC Discovery §3, RFC 8414 §2): https, no query, fragment or trailing slash, since well-known paths are appended to it. */
const httpsIssuer = z
  .string()
  .url()
  .refine((u) => /^https:\/\/[^?#]*[^/?#]$/.test(u), "must be an https URL without query, fragment or trailing slash");

const trustDomain = z.string().superRefine((v, ctx) => {
  try {
    TrustDomain.parse(v);
  } catch (e) {
    ctx.addIssue({ code: "custom", message: (e as Error).message });
  }
});

/**
 * Safe defaults of `limits` (durations in seconds); the README's configuration section explains
 * them. Also the witness's listener's limits: it has no configuration file.
 */
export const LIMIT_DEFAULTS = {
  handshakeTimeout: 10,
  headersTimeout: 10,
  requestTimeout: 30,
  idleTimeout: 15,
  maxConnections: 2048,
  maxConnectionsPerAddress: 64,
  maxHeadersCount: 64,
  requestsPerTurn: 16,
  maxOpenRequestsPerConnection: 16,
  attestRate: { perSecond: 10, burst: 40, trackedAddresses: 100_000 },
  // SPIRE's server allows an agent 500 X509-SVID and 500 JWT-SVID signatures a second; the burst
  // covers an agent that fills its cache of 1,000 SVIDs at start.
  issuanceRate: { perSecond: 500, burst: 1000, trackedNodes: 100_000 },
  // As much for each OAuth client: token exchanges, introspections and revocations.
  clientRate: { perSecond: 500, burst: 1000, trackedClients: 100_000 },
  rateLimitAuditInterval: 60,
  purgeInterval: 60,
  entryChangeRetention: 7 * 86400,
};

/**
 * The smallest `limits.issuanceRate.burst`: a batch request takes one token per SVID, all or none,
 * so a bucket must hold the largest batch (MAX_X509_BATCH, MAX_JWT_BATCH in src/api/public-routes.ts).
 */
export const MIN_ISSUANCE_BURST = 64;

/** The rate of a token bucket section of `limits`: `burst` at once (at least `minBurst`), refilled at `perSecond`. */
const bucketRate = (d: { perSecond: number; burst: number }, minBurst = 1) => ({
  perSecond: z.number().positive().max(1_000_000).default(d.perSecond),
  burst: z.number().int().min(minBurst).max(1_000_000).default(d.burst),
});
/** How many keys (addresses, nodes, clients) have buckets remembered; the least recently seen is forgotten first. */
const trackedKeys = (n: number) => z.number().int().min(16).max(10_000_000).default(n);

/** Safe defaults of `store.pool` (durations in seconds). */
const STORE_POOL_DEFAULTS = { max: 10, connectionTimeout: 5, idleTimeout: 30, statementTimeout: 30 };

export const serverConfigSchema = z
  .object({
    trustDomain: trustDomain.default("example.org"),
    dataDir: z.string().min(1).default(".data"),
    listen: hostPort.default("127.0.0.1:8443"),
    /**
     * Processes serving the API on the one listening port (node:cluster), sharing the HSM token
     * and the datastore: 1 is a single process. See the README (several processes).
     */
    workers: z.number().int().min(1).max(64).default(1),
    /** Admin Unix socket; default <dataDir>/admin.sock. Its directory must be private like the data directory (owned by the server's user, not group/world-writable). */
    adminSocket: z.string().min(1).optional(),
    hsm: z
      .object({
        /** PKCS#11 module path; default: SoftHSM2's. */
        modulePath: z.string().min(1).optional(),
        tokenLabel: z.string().min(1).max(32).default("hallmark"),
        /** The user PIN: from a file or an environment variable, never inline in the config. */
        pinFile: z.string().min(1).optional(),
        pinEnv: z.string().min(1).default("HALLMARK_HSM_PIN"),
        /** Development: create and initialise a SoftHSM2 token under <dataDir>/softhsm. */
        softhsmAutoInit: z.boolean().default(true),
        sessions: z.number().int().min(1).max(64).default(4),
        /**
         * How signatures are requested: "sync" (C_Sign on the event loop), "async" (C_SignAsync on
         * the thread pool) or "auto": sync for SoftHSM2, whose signatures are cheaper than the
         * thread hop, async for other modules, which may wait on a device or a network.
         */
        signing: z.enum(["auto", "sync", "async"]).default("auto"),
        /** Sign with session copies of the token keys: auto = on for SoftHSM2, off for any other module (Pkcs11KeyStoreOptions.sessionCopies). */
        sessionCopies: z.enum(["auto", "on", "off"]).default("auto"),
      })
      .strict()
      .default({ tokenLabel: "hallmark", pinEnv: "HALLMARK_HSM_PIN", softhsmAutoInit: true, sessions: 4, signing: "auto", sessionCopies: "auto" }),
    /**
     * The datastore. sqlite (default): one file, <dataDir>/hallmark.db. postgres: a shared
     * PostgreSQL database (several replicas may use it); `url` is required then, and a url alone
     * selects postgres. The password is in the url, or read from `passwordFile` (never logged).
     */
    store: z
      .object({
        driver: z.enum(["sqlite", "postgres"]).optional(),
        /** postgres://USER@HOST:PORT/DB (also HALLMARK_STORE_URL); query parameters such as sslmode pass to node-postgres. */
        url: z
          .string()
          .regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL")
          .optional(),
        /** A file holding the database password (its first line), instead of putting it in the url. */
        passwordFile: z.string().min(1).optional(),
        /** Apply pending schema migrations at start (default); false (`hallmark server --no-migrate`): refuse to start on an older schema (store_schema_behind). */
        migrate: z.boolean().default(true),
        /** PostgreSQL connection pool, per replica. */
        pool: z
          .object({
            /** Connections at most. */
            max: z.number().int().min(1).max(1000).default(STORE_POOL_DEFAULTS.max),
            /** Giving up on a new connection after this: the request answers 503 store_unavailable. */
            connectionTimeout: durationSeconds.default(STORE_POOL_DEFAULTS.connectionTimeout),
            /** An idle connection is closed after this. */
            idleTimeout: durationSeconds.default(STORE_POOL_DEFAULTS.idleTimeout),
            /** The server cancels a statement running longer than this. */
            statementTimeout: durationSeconds.default(STORE_POOL_DEFAULTS.statementTimeout),
          })
          .strict()
          .default(STORE_POOL_DEFAULTS),
      })
      .strict()
      .transform((s) => ({ ...s, driver: s.driver ?? (s.url ? ("postgres" as const) : ("sqlite" as const)) }))
      .refine((s) => s.driver !== "postgres" || s.url !== undefined, { message: "store.url is required with driver postgres", path: ["url"] })
      .refine((s) => s.driver !== "sqlite" || (s.url === undefined && s.passwordFile === undefined), { message: "url and passwordFile are for driver postgres", path: ["driver"] })
      .default({ driver: "sqlite", migrate: true, pool: STORE_POOL_DEFAULTS }),
    ca: z
      .object({
        keyType: keyType.default("ec-p256"),
        ttl: durationSeconds.default(365 * 86400),
        upstream: z
          .object({
            /** PEM: the upstream CA certificate first, then its chain to the root. */
            certificateChainFile: z.string().min(1),
            /** The upstream key: a PEM file, or a key already in the HSM by label. */
            keyFile: z.string().min(1).optional(),
            hsmLabel: z.string().min(1).optional(),
          })
          .strict()
          .refine((u) => (u.keyFile === undefined) !== (u.hsmLabel === undefined), "give exactly one of keyFile and hsmLabel")
          .optional(),
        rotation: z
          .object({
            /** Prepare the next CA key when this fraction of the active CA's life has passed. */
            prepareAt: z.number().gt(0).lt(1).default(0.5),
            /** Activate it at this fraction. */
            activateAt: z.number().gt(0).lt(1).default(0.75),
            checkInterval: durationSeconds.default(600),
          })
          .strict()
          .refine((r) => r.prepareAt < r.activateAt, "prepareAt must come before activateAt")
          .optional(),
      })
      .strict()
      .default({ keyType: "ec-p256", ttl: 365 * 86400 }),
    jwt: z
      .object({
        keyType: keyType.default("ec-p256"),
        /** RSA JWT keys sign RS256 (pkcs1) or PS256 (pss). */
        rsaPadding: z.enum(["pkcs1", "pss"]).default("pkcs1"),
        /**
         * The OIDC issuer: `issuer` of the discovery document and `iss` of every JWT-SVID; default
         * the bound https://<listen>. Set it to the public URL relying parties fetch discovery from.
         * OIDC Discovery §3 wants https with no query or fragment; no trailing slash, since the
         * JWKS URL is built by appending to it and relying parties compare `iss` byte for byte.
         */
        issuer: httpsIssuer.optional(),
      })
      .strict()
      .default({ keyType: "ec-p256", rsaPadding: "pkcs1" }),
    tls: z
      .object({
        /**
         * Extra names in the server's own X509-SVID, for HTTPS clients that check the host they
         * dialled (curl, browsers, OIDC relying parties): the public DNS names and addresses the
         * server is reached by. The listen address is always named (127.0.0.1 and ::1 for 0.0.0.0
         * and ::), and so is localhost. SPIFFE clients check the URI SAN instead.
         */
        dnsNames: z.array(z.string().regex(DNS_NAME, "must be a DNS name")).max(16).default([]),
        ipAddresses: z
          .array(z.string().refine((ip) => ipAddressBytes(ip) !== undefined, "must be an IPv4 or IPv6 address"))
          .max(8)
          .default([]),
      })
      .strict()
      .default({ dnsNames: [], ipAddresses: [] }),
    svid: z
      .object({
        nodeTtl: durationSeconds.default(3600),
        x509Ttl: durationSeconds.default(3600),
        jwtTtl: durationSeconds.default(300),
        /** Life of a WIT-SVID (WIT-SVID §3.4 sets no limit; a proof-of-possession token may live longer than a bearer JWT). Capped by maxTtl. */
        witTtl: durationSeconds.default(300),
        maxTtl: durationSeconds.default(86400),
        /**
         * After a node renews or attests again, its previous SVID keeps working this long, so
         * requests already in flight on other connections finish. 0 retires it at once.
         */
        nodeRenewalOverlap: z.union([z.literal(0), durationSeconds]).default(30),
      })
      .strict()
      .default({ nodeTtl: 3600, x509Ttl: 3600, jwtTtl: 300, witTtl: 300, maxTtl: 86400, nodeRenewalOverlap: 30 }),
    attestation: z
      .object({
        sessionTtl: durationSeconds.default(120),
        maxEvidenceBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(256 * 1024),
      })
      .strict()
      .default({ sessionTtl: 120, maxEvidenceBytes: 256 * 1024 }),
    joinToken: z
      .object({ enabled: z.boolean().default(true), maxTtl: durationSeconds.default(86400) })
      .strict()
      .default({ enabled: true, maxTtl: 86400 }),
    /** Per-attestor configuration, validated by each attestor's own schema. */
    attestors: z.record(z.string(), z.unknown()).default({}),
    bundle: z
      .object({ refreshHint: durationSeconds.default(300) })
      .strict()
      .default({ refreshHint: 300 }),
    federation: z
      .object({
        /**
         * The SPIFFE federation bundle endpoint under the https_web profile: its own listener with a
         * Web PKI certificate (e.g. from an ACME CA), re-read when the files change. The main
         * listener already serves the https_spiffe profile with the server's X509-SVID.
         */
        bundleEndpoint: z
          .object({
            listen: hostPort,
            /** PEM: the certificate first, then its intermediates. */
            certFile: z.string().min(1),
            keyFile: z.string().min(1),
            /** How often the files are checked for a renewed certificate. */
            reloadInterval: durationSeconds.default(60),
          })
          .strict()
          .optional(),
        /**
         * Consuming foreign bundles (`hallmark federation create`): how often the server looks for
         * relationships whose refresh is due (each is refreshed at its peer's spiffe_refresh_hint,
         * kept within 30 s..1 day), and how long one fetch of a bundle endpoint may take.
         */
        refreshCheckInterval: durationSeconds.default(5),
        fetchTimeout: durationSeconds.default(10),
      })
      .strict()
      .default({ refreshCheckInterval: 5, fetchTimeout: 10 }),
    /**
     * Delegation: OAuth 2.0 Token Exchange (RFC 8693) at POST /oauth2/token, so an attested agent
     * acts for a person with a narrow, DPoP-bound access token (RFC 9068, RFC 9449). Who may act
     * for whom is policy in the datastore (`hallmark delegation create`); this section says whose
     * subject tokens are trusted and how proofs are checked.
     */
    delegation: z
      .object({
        /** `iss` of access tokens and `issuer` of /.well-known/oauth-authorization-server; default jwt.issuer, else https://<listen>. Same rules as jwt.issuer. */
        issuer: httpsIssuer.optional(),
        /**
         * Issuers whose tokens may be subject tokens (the company's OIDC provider). Keys come from
         * this configuration only, never from a token's own `iss`: a JWKS file, or a JWKS URL
         * fetched over HTTPS trusting `caFile` (default the system roots). Hallmark's own access
         * tokens and JWT-SVIDs are always trusted subject tokens too (delegation chains).
         */
        subjectIssuers: z
          .array(
            z
              .object({
                issuer: z.string().url().max(512),
                /** The subject token's `aud` must contain one of these. */
                audiences: z.array(z.string().min(1).max(512)).min(1).max(16),
                jwksFile: z.string().min(1).optional(),
                jwksUri: z.string().url().refine((u) => u.startsWith("https://"), "must be an https URL").optional(),
                /** PEM roots for jwksUri's TLS; default the system's. */
                caFile: z.string().min(1).optional(),
                /** How often jwksUri is fetched again (and at most how stale its keys may be). */
                jwksRefresh: durationSeconds.default(300),
              })
              .strict()
              .refine((i) => (i.jwksFile === undefined) !== (i.jwksUri === undefined), "give exactly one of jwksFile and jwksUri"),
          )
          .max(64)
          .default([]),
        /** Depth of nested `act` claims an access token may carry (RFC 8693 §4.1 chains); deeper requests are refused. */
        maxActDepth: z.number().int().min(1).max(16).default(4),
        /** Lifetime of an access token when the delegation and the subject token allow more. */
        accessTokenTtl: durationSeconds.default(300),
        /** The access-token signing key (in the HSM, published at /oauth2/jwks). */
        keyType: keyType.default("ec-p256"),
        dpop: z
          .object({
            /** Refuse exchanges without a DPoP proof, whatever the delegation says. */
            required: z.boolean().default(true),
            /** How far a proof's `iat` may be from the server's clock, either way (RFC 9449 §11.1). */
            iatWindow: durationSeconds.default(60),
            /** Demand server nonces (DPoP-Nonce, use_dpop_nonce: RFC 9449 §8). */
            nonce: z.boolean().default(false),
          })
          .strict()
          .default({ required: true, iatWindow: 60, nonce: false }),
      })
      .strict()
      .default({ subjectIssuers: [], maxActDepth: 4, accessTokenTtl: 300, keyType: "ec-p256", dpop: { required: true, iatWindow: 60, nonce: false } }),
    audit: z
      .object({
        /**
         * Records at the end of the audit log checked at every start (each hash and each link); a
         * break is logged as an error and exported as hallmark_audit_chain_ok 0. 0 skips the check.
         */
        tailCheckRecords: z.number().int().min(0).max(1_000_000).default(1000),
        /**
         * Group commit: audit appends (one per issuance and refusal) made close together share one
         * transaction, in call order; each request still waits for its own record's commit.
         */
        groupCommit: z
          .object({
            /** The most records one transaction commits. */
            maxBatch: z.number().int().min(1).max(1024).default(256),
            /**
             * How long (ms) the first append of a batch waits for more. 0 takes the appends made in
             * the same turn of the event loop; more batches more under load, and adds up to that to
             * each request's latency.
             */
            maxDelayMs: z.number().min(0).max(10).default(0),
          })
          .strict()
          .default({ maxBatch: 256, maxDelayMs: 0 }),
      })
      .strict()
      .default({ tailCheckRecords: 1000, groupCommit: { maxBatch: 256, maxDelayMs: 0 } }),
    /**
     * The transparency log (README, Transparency log): every audit record is a leaf of a Merkle
     * tree whose checkpoints an Ed25519 key in the HSM signs.
     */
    transparency: z
      .object({
        /**
         * The checkpoint's origin line and the log key's name: one line without spaces or '+'.
         * Default `<trustDomain>/hallmark-log`. Changing it starts another log, under another key.
         */
        origin: z
          .string()
          .min(1)
          .max(255)
          .regex(/^[^\s+]+$/, "one word without spaces or '+'")
          .optional(),
        /**
         * A checkpoint is signed this often when the tree grew. One second: a signature costs about
         * half a millisecond, and `attest`/`fetch` wait for the checkpoint that covers their receipt.
         */
        checkpointInterval: durationSeconds.default(1),
        /** Records integrated per transaction at most (and how often the integrator polls: every second). */
        integrationBatch: z.number().int().min(1).max(100_000).default(1000),
        /**
         * Milliseconds between an append and its integration: the appends of one such window are
         * integrated together, instead of one integration (a write transaction) per issuance.
         * A record's inclusion proof is available that much later; 0 integrates at once.
         */
        integrationDelay: z.number().int().min(0).max(1000).default(15),
        /**
         * Witnesses (c2sp.org/tlog-witness) asked to cosign each new checkpoint: `url` is the
         * witness's submission prefix (POST <url>/add-checkpoint), `key` its cosigner verifier key
         * (`<name>+<key id>+<base64>`, type 0x04, what `hallmark log witness-key` prints).
         * Submissions run in the background (5 s each at most) and never hold up issuance; the
         * cosignatures are served appended to /log/checkpoint and to receipts. None by default.
         */
        witnesses: z
          .array(
            z
              .object({
                url: z.string().regex(/^https?:\/\/[^\s]+$/, "an http:// or https:// URL"),
                key: z.string().regex(/^[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+$/, "a verifier key <name>+<key id>+<base64>"),
              })
              .strict(),
          )
          .max(32)
          .default([]),
      })
      .strict()
      .default({ checkpointInterval: 1, integrationBatch: 1000, integrationDelay: 15, witnesses: [] }),
    /**
     * What one anonymous caller may hold or spend. Every public connection is bounded in time and
     * in number, so that slow or many connections cannot exhaust file descriptors and memory, and
     * the anonymous attestation endpoints are rate-limited per address, so that one caller cannot
     * grow the database or the audit log without limit.
     */
    limits: z
      .object({
        /** A TLS handshake must finish within this, however slowly its bytes arrive. */
        handshakeTimeout: durationSeconds.default(LIMIT_DEFAULTS.handshakeTimeout),
        /** A request's headers must all arrive within this of its first byte. */
        headersTimeout: durationSeconds.default(LIMIT_DEFAULTS.headersTimeout),
        /** A whole request, body included, must arrive within this (256 KiB at 10 KB/s fits). */
        requestTimeout: durationSeconds.default(LIMIT_DEFAULTS.requestTimeout),
        /** A connection silent this long is closed: before its first request, between keep-alive requests, or stalled. */
        idleTimeout: durationSeconds.default(LIMIT_DEFAULTS.idleTimeout),
        /** Open connections in all; measured at 60-100 KB of memory each (TLS, with mTLS issuance). */
        maxConnections: z.number().int().min(1).max(1_000_000).default(LIMIT_DEFAULTS.maxConnections),
        /** Open connections from one IPv4 address or one IPv6 /64; raise it for nodes behind one NAT. */
        maxConnectionsPerAddress: z.number().int().min(1).max(1_000_000).default(LIMIT_DEFAULTS.maxConnectionsPerAddress),
        maxHeadersCount: z.number().int().min(8).max(2000).default(LIMIT_DEFAULTS.maxHeadersCount),
        /**
         * Requests started per turn of the event loop; the rest wait, in the order they were read
         * (src/api/arrival-order.ts), so that under many busy connections each is served in turn.
         */
        requestsPerTurn: z.number().int().min(1).max(65_536).default(LIMIT_DEFAULTS.requestsPerTurn),
        /**
         * Requests one connection may hold open (read, not yet answered), pipelined or not; the
         * connection that brings one more is closed (src/api/connection-limits.ts).
         */
        maxOpenRequestsPerConnection: z.number().int().min(1).max(1024).default(LIMIT_DEFAULTS.maxOpenRequestsPerConnection),
        /**
         * Token bucket per address for POST /v1/attest/sessions, …/evidence and …/answer: `burst`
         * requests at once, refilled at `perSecond`. One attestation takes two or three requests.
         * Refused node credentials and refused client authentications at /oauth2/token,
         * /introspect and /revoke spend it too (each refusal is audited only within it).
         * Refusals are 429 rate_limited with Retry-After.
         */
        attestRate: z
          .object({ ...bucketRate(LIMIT_DEFAULTS.attestRate), trackedAddresses: trackedKeys(LIMIT_DEFAULTS.attestRate.trackedAddresses) })
          .strict()
          .default(LIMIT_DEFAULTS.attestRate),
        /**
         * Token bucket per node for the SVIDs its workloads are issued (POST /v1/svids/x509, /jwt,
         * /wit and the batches, one token per SVID; a node's own renewal is not counted), so that a
         * workload asking its agent for JWT-SVIDs with ever new audiences cannot make the server
         * sign, and the audit log grow, at its pace. Refusals are 429 rate_limited with Retry-After.
         */
        issuanceRate: z
          .object({ ...bucketRate(LIMIT_DEFAULTS.issuanceRate, MIN_ISSUANCE_BURST), trackedNodes: trackedKeys(LIMIT_DEFAULTS.issuanceRate.trackedNodes) })
          .strict()
          .default(LIMIT_DEFAULTS.issuanceRate),
        /**
         * Token bucket per OAuth client (a workload's SPIFFE ID) for POST /oauth2/token,
         * /introspect and /revoke, one token per request once the client has authenticated,
         * refused or not: each writes an audit record. Refusals are 429 rate_limited with Retry-After.
         */
        clientRate: z
          .object({ ...bucketRate(LIMIT_DEFAULTS.clientRate), trackedClients: trackedKeys(LIMIT_DEFAULTS.clientRate.trackedClients) })
          .strict()
          .default(LIMIT_DEFAULTS.clientRate),
        /** Rate-limited requests are audited as one `rate_limited_summary` record per address, node or client this often. */
        rateLimitAuditInterval: durationSeconds.default(LIMIT_DEFAULTS.rateLimitAuditInterval),
        /** Expired attestation sessions (nonces), join tokens and DPoP proof records are deleted this often. */
        purgeInterval: durationSeconds.default(LIMIT_DEFAULTS.purgeInterval),
        /**
         * How long entry creations and deletions stay in the change log agents sync from. An agent
         * whose last revision is older (offline longer than this) gets the full list again.
         */
        entryChangeRetention: durationSeconds.default(LIMIT_DEFAULTS.entryChangeRetention),
      })
      .strict()
      .refine((l) => l.headersTimeout <= l.requestTimeout, "headersTimeout must not exceed requestTimeout")
      .default(LIMIT_DEFAULTS),
    log: z
      .object({ level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info") })
      .strict()
      .default({ level: "info" }),
  })
  .strict();

export type ServerConfig = z.infer<typeof serverConfigSchema>;
export type ServerLimits = ServerConfig["limits"];

export interface ServerFlags {
  config?: string | undefined;
  dataDir?: string | undefined;
  listen?: string | undefined;
  trustDomain?: string | undefined;
  /** `--no-migrate`: store.migrate false. */
  noMigrate?: boolean | undefined;
  /** `--workers N`. */
  workers?: number | undefined;
}

/**
 * Environment overrides, each by the config field it sets (a flag beats the environment, which
 * beats the file). Exported so `hallmark server --help` lists exactly these.
 */
export const ENV_OVERRIDES: Readonly<Record<string, string>> = {
  HALLMARK_TRUST_DOMAIN: "trustDomain",
  HALLMARK_DATA_DIR: "dataDir",
  HALLMARK_LISTEN: "listen",
  HALLMARK_LOG_LEVEL: "log.level",
  HALLMARK_HSM_MODULE: "hsm.modulePath",
  HALLMARK_HSM_TOKEN_LABEL: "hsm.tokenLabel",
  HALLMARK_STORE_URL: "store.url",
};

export function loadServerConfig(flags: ServerFlags, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const source = flags.config ?? "config";
  const raw: Record<string, unknown> = flags.config ? readConfigFile(flags.config) : {};
  for (const [name, field] of Object.entries(ENV_OVERRIDES)) {
    const v = env[name];
    if (v === undefined || v === "") continue;
    const [section, key] = field.split(".") as [string, string | undefined];
    raw[section] = key ? { ...(raw[section] as object), [key]: v } : v;
  }
  if (flags.dataDir !== undefined) raw.dataDir = flags.dataDir;
  if (flags.listen !== undefined) raw.listen = flags.listen;
  if (flags.trustDomain !== undefined) raw.trustDomain = flags.trustDomain;
  if (flags.workers !== undefined) raw.workers = flags.workers;
  if (flags.noMigrate) raw.store = { ...(raw.store as object), migrate: false };
  const parsed = serverConfigSchema.safeParse(raw);
  if (!parsed.success) throw configError(source, parsed.error);
  const config = parsed.data;
  config.dataDir = resolve(config.dataDir);
  return config;
}

export function adminSocketPath(config: Pick<ServerConfig, "adminSocket" | "dataDir">): string {
  return config.adminSocket ?? join(config.dataDir, "admin.sock");
}

export type StoreConfig = ServerConfig["store"];

/** The SQLite database of the server with this data directory (store.driver sqlite). */
export function databasePath(config: Pick<ServerConfig, "dataDir">): string {
  return join(config.dataDir, "hallmark.db");
}

/** Reads a YAML or JSON config file (JSON is YAML) into a plain object. */
export function readConfigFile(path: string): Record<string, unknown> {
  const text = readInputText(path, "--config");
  let value: unknown;
  try {
    value = parseYaml(text, { maxAliasCount: 100 });
  } catch (e) {
    throw new HallmarkError("config_invalid", `${path}: not valid YAML or JSON: ${(e as Error).message.split("\n")[0]}`);
  }
  if (value === null || value === undefined) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new HallmarkError("config_invalid", `${path}: the top level must be a mapping`);
  }
  return value as Record<string, unknown>;
}
