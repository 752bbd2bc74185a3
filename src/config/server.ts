import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { HallmarkError } from "../errors.js";
import { DNS_NAME, ipAddressBytes } from "../pki/subject-names.js";
import { TrustDomain } from "../spiffe/id.js";
import { durationSeconds } from "./duration.js";
import { configError } from "./errors.js";

const keyType = z.enum(["ec-p256", "ec-p384", "rsa-2048", "rsa-3072"]);

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be HOST:PORT");

const trustDomain = z.string().superRefine((v, ctx) => {
  try {
    TrustDomain.parse(v);
  } catch (e) {
    ctx.addIssue({ code: "custom", message: (e as Error).message });
  }
});

export const serverConfigSchema = z
  .object({
    trustDomain: trustDomain.default("example.org"),
    dataDir: z.string().min(1).default(".data"),
    listen: hostPort.default("127.0.0.1:8443"),
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
      })
      .strict()
      .default({ tokenLabel: "hallmark", pinEnv: "HALLMARK_HSM_PIN", softhsmAutoInit: true, sessions: 4 }),
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
        issuer: z
          .string()
          .url()
          .refine((u) => /^https:\/\/[^?#]*[^/?#]$/.test(u), "must be an https URL without query, fragment or trailing slash")
          .optional(),
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
        maxTtl: durationSeconds.default(86400),
        /**
         * After a node renews or attests again, its previous SVID keeps working this long, so
         * requests already in flight on other connections finish. 0 retires it at once.
         */
        nodeRenewalOverlap: z.union([z.literal(0), durationSeconds]).default(30),
      })
      .strict()
      .default({ nodeTtl: 3600, x509Ttl: 3600, jwtTtl: 300, maxTtl: 86400, nodeRenewalOverlap: 30 }),
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
      })
      .strict()
      .default({}),
    audit: z
      .object({
        /**
         * Records at the end of the audit log checked at every start (each hash and each link); a
         * break is logged as an error and exported as hallmark_audit_chain_ok 0. 0 skips the check.
         */
        tailCheckRecords: z.number().int().min(0).max(1_000_000).default(1000),
      })
      .strict()
      .default({ tailCheckRecords: 1000 }),
    log: z
      .object({ level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info") })
      .strict()
      .default({ level: "info" }),
  })
  .strict();

export type ServerConfig = z.infer<typeof serverConfigSchema>;

export interface ServerFlags {
  config?: string | undefined;
  dataDir?: string | undefined;
  listen?: string | undefined;
  trustDomain?: string | undefined;
}

/** Environment overrides: a flag beats the environment, which beats the file. */
const ENV_OVERRIDES: ReadonlyArray<[string, (raw: Record<string, unknown>, v: string) => void]> = [
  ["HALLMARK_TRUST_DOMAIN", (r, v) => (r.trustDomain = v)],
  ["HALLMARK_DATA_DIR", (r, v) => (r.dataDir = v)],
  ["HALLMARK_LISTEN", (r, v) => (r.listen = v)],
  ["HALLMARK_LOG_LEVEL", (r, v) => (r.log = { ...(r.log as object), level: v })],
  ["HALLMARK_HSM_MODULE", (r, v) => (r.hsm = { ...(r.hsm as object), modulePath: v })],
  ["HALLMARK_HSM_TOKEN_LABEL", (r, v) => (r.hsm = { ...(r.hsm as object), tokenLabel: v })],
];

export function loadServerConfig(flags: ServerFlags, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const source = flags.config ?? "config";
  const raw: Record<string, unknown> = flags.config ? readConfigFile(flags.config) : {};
  for (const [name, apply] of ENV_OVERRIDES) {
    const v = env[name];
    if (v !== undefined && v !== "") apply(raw, v);
  }
  if (flags.dataDir !== undefined) raw.dataDir = flags.dataDir;
  if (flags.listen !== undefined) raw.listen = flags.listen;
  if (flags.trustDomain !== undefined) raw.trustDomain = flags.trustDomain;
  const parsed = serverConfigSchema.safeParse(raw);
  if (!parsed.success) throw configError(source, parsed.error);
  const config = parsed.data;
  config.dataDir = resolve(config.dataDir);
  return config;
}

export function adminSocketPath(config: Pick<ServerConfig, "adminSocket" | "dataDir">): string {
  return config.adminSocket ?? join(config.dataDir, "admin.sock");
}

/** The SQLite database of the server with this data directory. */
export function databasePath(config: Pick<ServerConfig, "dataDir">): string {
  return join(config.dataDir, "hallmark.db");
}

/** Reads a YAML or JSON config file (JSON is YAML) into a plain object. */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new HallmarkError("config_invalid", `${path}: cannot be read`);
  }
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
