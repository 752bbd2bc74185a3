import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import type { AuditVerification } from "../audit/log.js";
import { verifyStoredAuditChain } from "../audit/stored-chain.js";
import { sqliteStoreOf } from "../store/open.js";
import { writeFileAtomic } from "../client/files.js";
import { type ApiResponse, adminRequest, expectOk } from "../client/http.js";
import { databasePath } from "../config/server.js";
import { HallmarkError, isHallmarkError } from "../errors.js";
import { readInputText } from "../input-file.js";
import { CA_KEY_KINDS } from "../service/ports.js";
import { type Command, type FlagSpec, type OptionSpec, UsageError, optionalString, requireString, seconds, stringList } from "./args.js";

const DATA_DIR: FlagSpec = {
  type: "string",
  value: "DIR",
  description: "the data directory of the server to administer; its admin socket is DIR/admin.sock",
  default: ".data",
  env: "HALLMARK_DATA_DIR",
};
export const ADMIN_OPTIONS: OptionSpec = {
  "data-dir": DATA_DIR,
  "admin-socket": { type: "string", value: "PATH", description: "the server's admin socket, when it is not in the data directory (beats --data-dir)" },
  json: { type: "boolean", description: "print the answer as JSON" },
};
const SPIFFE_ID: FlagSpec = { type: "string", value: "ID", required: true, description: "the SPIFFE ID, spiffe://<trust domain>/<path>" };

function dataDirOf(v: Record<string, unknown>): string {
  return resolve(optionalString(v, "data-dir") ?? (process.env[DATA_DIR.env!] || DATA_DIR.default!));
}

export function socketOf(v: Record<string, unknown>): string {
  const explicit = optionalString(v, "admin-socket");
  return explicit ? resolve(explicit) : join(dataDirOf(v), "admin.sock");
}

async function admin(v: Record<string, unknown>, method: string, path: string, body?: unknown): Promise<unknown> {
  const socket = socketOf(v);
  let res: ApiResponse;
  try {
    res = await adminRequest(socket, method, path, body);
  } catch (e) {
    throw adminSocketError(e, socket);
  }
  return expectOk(res);
}

const POINT_AT_SERVER = "name the server's data directory with --data-dir DIR (or HALLMARK_DATA_DIR), or its socket with --admin-socket PATH";

/** The three ways an admin socket fails an operator, each in words that say what to do. */
function adminSocketError(e: unknown, socket: string): unknown {
  // The errno stays the cause, so a caller can still tell these apart (audit verify's --offline hint).
  const cause = (e as Error).cause as NodeJS.ErrnoException | undefined;
  const errno = cause?.code;
  switch (errno) {
    case "ENOENT":
    case "ENOTDIR":
      return new HallmarkError("unavailable", `no admin socket at ${socket}: no server runs with this data directory; ${POINT_AT_SERVER}`, { cause });
    case "ECONNREFUSED":
      return new HallmarkError(
        "unavailable",
        `nothing answers on the admin socket ${socket}: the server has stopped (the socket file is left over); start it, or ${POINT_AT_SERVER}`,
        { cause },
      );
    case "EACCES":
    case "EPERM":
      return new HallmarkError(
        "admin_required",
        `permission denied on the admin socket ${socket}: only the user the server runs as may administer it (the socket is mode 0600); run this as that user`,
        { cause },
      );
    default:
      return e;
  }
}

function print(v: Record<string, unknown>, json: unknown, text: () => string): number {
  console.log(v.json ? JSON.stringify(json, null, 2) : text());
  return 0;
}

interface EntryJson {
  id: string;
  spiffe_id: string;
  parent_id: string;
  selectors: string[];
  federates_with?: string[];
}

interface DelegationJson {
  id: string;
  actor: string;
  subject_issuer: string;
  subject: string | null;
  scopes: string[];
  audiences: string[];
  max_ttl_seconds: number;
  require_dpop: boolean;
  require_attestor: string | null;
  created_at: string;
}

const delegationLine = (d: DelegationJson) =>
  `${d.id}  ${d.actor}  for ${d.subject ?? "any subject"} of ${d.subject_issuer}  scope="${d.scopes.join(" ")}"  audience=${d.audiences.join(",")}` +
  `  max-ttl=${d.max_ttl_seconds}s${d.require_dpop ? "  dpop" : ""}${d.require_attestor ? `  attestor=${d.require_attestor}` : ""}`;

const delegationDetails = (d: DelegationJson) =>
  [
    `id:               ${d.id}`,
    `actor:            ${d.actor}`,
    `subject issuer:   ${d.subject_issuer}`,
    `subject:          ${d.subject ?? "any subject of the issuer"}`,
    `scope:            ${d.scopes.join(" ")}`,
    `audiences:        ${d.audiences.join(" ")}`,
    `max TTL:          ${d.max_ttl_seconds}s`,
    `require DPoP:     ${d.require_dpop ? "yes" : "no (unless the server's delegation.dpop.required)"}`,
    `require attestor: ${d.require_attestor ?? "none"}`,
    `created:          ${d.created_at}`,
  ].join("\n");

/** `--scope "repo:read issues:write"`, repeatable: the scope tokens, space-separated as in OAuth; the server judges each. */
const scopeTokens = (v: Record<string, unknown>): string[] => stringList(v, "scope").flatMap((s) => s.split(" ")).filter((t) => t !== "");

const DELEGATION_ID = { name: "id", value: "ID", description: "the delegation's id, as 'delegation list' prints it" };

const entryLine = (e: EntryJson) =>
  `${e.id}  ${e.spiffe_id}  parent=${e.parent_id}  selectors=${e.selectors.join(",") || "-"}${e.federates_with?.length ? `  federates-with=${e.federates_with.join(",")}` : ""}`;

export const adminCommands: Command[] = [
  {
    name: "token create",
    summary: "create a one-time join token for a SPIFFE ID",
    options: {
      "spiffe-id": { ...SPIFFE_ID, description: "the SPIFFE ID the node attesting with this token receives" },
      ttl: { type: "string", value: "DURATION", description: "how long the token may be used (90s, 10m, 1h; at most the server's joinToken.maxTtl)", default: "10m" },
      ...ADMIN_OPTIONS,
    },
    async run(v) {
      const r = (await admin(v, "POST", "/admin/tokens", {
        spiffe_id: requireString(v, "spiffe-id"),
        ttl_seconds: seconds(optionalString(v, "ttl") ?? "10m", "ttl"),
      })) as { token: string; spiffe_id: string; expires_at: string };
      return print(v, r, () => r.token);
    },
  },
  {
    name: "entry create",
    summary: "create a registration entry",
    options: {
      "parent-id": {
        ...SPIFFE_ID,
        description: "the node that may fetch this identity (its SPIFFE ID), or spiffe://<td>/hallmark/server for every node whose selectors include all of --selector",
      },
      "spiffe-id": { ...SPIFFE_ID, description: "the workload SPIFFE ID this entry issues (not under /hallmark, which is reserved)" },
      selector: { type: "string", multiple: true, value: "TYPE:VALUE", description: "a selector the workload (or, under the server's ID, the node) must have, e.g. unix:uid:1000" },
      "x509-ttl": { type: "string", value: "DURATION", description: "lifetime of X.509-SVIDs for this entry", default: "the server's svid.x509Ttl (1h), capped by svid.maxTtl" },
      "jwt-ttl": { type: "string", value: "DURATION", description: "lifetime of JWT-SVIDs for this entry", default: "the server's svid.jwtTtl (5m), capped by svid.maxTtl" },
      dns: { type: "string", multiple: true, value: "NAME", description: "a DNS name to add to the X.509-SVID's subject alternative names" },
      hint: { type: "string", value: "TEXT", description: "a hint handed to the workload with its SVID (Workload API hint), e.g. to tell several identities apart" },
      "federates-with": {
        type: "string",
        multiple: true,
        value: "TD",
        description: "a foreign trust domain (with a 'federation create' relationship) whose bundle the workload receives beside its own",
      },
      ...ADMIN_OPTIONS,
    },
    async run(v) {
      const x509 = optionalString(v, "x509-ttl");
      const jwt = optionalString(v, "jwt-ttl");
      const e = (await admin(v, "POST", "/admin/entries", {
        parent_id: requireString(v, "parent-id"),
        spiffe_id: requireString(v, "spiffe-id"),
        selectors: stringList(v, "selector"),
        ...(x509 ? { x509_ttl_seconds: seconds(x509, "x509-ttl") } : {}),
        ...(jwt ? { jwt_ttl_seconds: seconds(jwt, "jwt-ttl") } : {}),
        dns_names: stringList(v, "dns"),
        ...(optionalString(v, "hint") !== undefined ? { hint: optionalString(v, "hint") } : {}),
        ...(stringList(v, "federates-with").length ? { federates_with: stringList(v, "federates-with") } : {}),
      })) as EntryJson;
      return print(v, e, () => entryLine(e));
    },
  },
  {
    name: "entry list",
    summary: "list registration entries",
    options: {
      "parent-id": { type: "string", value: "ID", description: "only entries with this parent" },
      "spiffe-id": { type: "string", value: "ID", description: "only entries for this SPIFFE ID" },
      ...ADMIN_OPTIONS,
    },
    async run(v) {
      const q = new URLSearchParams();
      const parent = optionalString(v, "parent-id");
      const id = optionalString(v, "spiffe-id");
      if (parent) q.set("parent_id", parent);
      if (id) q.set("spiffe_id", id);
      const r = (await admin(v, "GET", `/admin/entries${q.size ? `?${q}` : ""}`)) as { entries: EntryJson[] };
      return print(v, r, () => r.entries.map(entryLine).join("\n") || "no entries");
    },
  },
  {
    name: "entry delete",
    summary: "delete a registration entry",
    options: { id: { type: "string", value: "ENTRY_ID", required: true, description: "the entry's id, as 'entry list' prints it" }, ...ADMIN_OPTIONS },
    async run(v) {
      const id = requireString(v, "id");
      await admin(v, "DELETE", `/admin/entries/${encodeURIComponent(id)}`);
      return print(v, { deleted: id }, () => `deleted ${id}`);
    },
  },
  {
    name: "node list",
    summary: "list attested nodes",
    options: ADMIN_OPTIONS,
    async run(v) {
      const r = (await admin(v, "GET", "/admin/nodes")) as {
        nodes: Array<{ spiffe_id: string; attestor: string; expires_at: string | null; evicted: boolean; banned: boolean }>;
      };
      return print(v, r, () =>
        r.nodes
          .map((n) => `${n.spiffe_id}  ${n.attestor}  expires=${n.expires_at ?? "-"}${n.evicted ? "  EVICTED" : ""}${n.banned ? "  BANNED" : ""}`)
          .join("\n") || "no nodes",
      );
    },
  },
  {
    name: "delegation create",
    summary: "let an agent act for people of an identity provider, within scopes, audiences and a lifetime",
    options: {
      actor: { ...SPIFFE_ID, description: "the agent's SPIFFE ID (its workload identity in this trust domain, not under /hallmark)" },
      "subject-issuer": { type: "string", value: "URL", required: true, description: "the issuer (iss) of the people's tokens: a configured delegation.subjectIssuers entry, or Hallmark's own issuer for chains" },
      subject: { type: "string", value: "SUB", description: "only this person (the tokens' sub)", default: "any subject of the issuer" },
      scope: { type: "string", multiple: true, value: "SCOPES", required: true, description: "the most the agent may get: scope tokens separated by spaces, e.g. \"repo:read issues:write\"" },
      audience: { type: "string", multiple: true, value: "AUD", required: true, description: "an audience or resource the agent's tokens may name (a URI or a logical name); repeat for more" },
      "max-ttl": { type: "string", value: "DURATION", required: true, description: "the longest life of an access token under this delegation (90s, 5m, 1h; at most the server's svid.maxTtl)" },
      "require-dpop": { type: "boolean", description: "issue only DPoP-bound tokens under this delegation, even where the server would allow Bearer" },
      "require-attestor": { type: "string", value: "TYPE", description: "the agent's node must have attested with this attestor: tpm, aws_nitro, amd_sev_snp or join_token" },
      ...ADMIN_OPTIONS,
    },
    async run(v) {
      const subject = optionalString(v, "subject");
      const attestor = optionalString(v, "require-attestor");
      const d = (await admin(v, "POST", "/admin/delegations", {
        actor: requireString(v, "actor"),
        subject_issuer: requireString(v, "subject-issuer"),
        ...(subject !== undefined ? { subject } : {}),
        scopes: scopeTokens(v),
        audiences: stringList(v, "audience"),
        max_ttl_seconds: seconds(requireString(v, "max-ttl"), "max-ttl"),
        require_dpop: v["require-dpop"] === true,
        ...(attestor !== undefined ? { require_attestor: attestor } : {}),
      })) as DelegationJson;
      return print(v, d, () => delegationLine(d));
    },
  },
  {
    name: "delegation list",
    summary: "list delegations, oldest first",
    options: { actor: { type: "string", value: "ID", description: "only the delegations of this agent" }, ...ADMIN_OPTIONS },
    async run(v) {
      const actor = optionalString(v, "actor");
      const r = (await admin(v, "GET", `/admin/delegations${actor ? `?${new URLSearchParams({ actor })}` : ""}`)) as { delegations: DelegationJson[] };
      return print(v, r, () => r.delegations.map(delegationLine).join("\n") || "no delegations");
    },
  },
  {
    name: "delegation show",
    summary: "show one delegation",
    options: ADMIN_OPTIONS,
    operand: DELEGATION_ID,
    async run(v) {
      const d = (await admin(v, "GET", `/admin/delegations/${encodeURIComponent(requireString(v, "id"))}`)) as DelegationJson;
      return print(v, d, () => delegationDetails(d));
    },
  },
  {
    name: "delegation delete",
    summary: "delete a delegation: the agent may no longer act under it",
    options: ADMIN_OPTIONS,
    operand: DELEGATION_ID,
    async run(v) {
      const id = requireString(v, "id");
      await admin(v, "DELETE", `/admin/delegations/${encodeURIComponent(id)}`);
      return print(v, { deleted: id }, () => `deleted ${id}`);
    },
  },
  nodeCommand("evict", "evict a node: every SVID it holds stops working at once; it may attest again", "evicted"),
  nodeCommand("ban", "evict a node and refuse its re-attestation (by SPIFFE ID and hardware identity) until unbanned", "banned"),
  nodeCommand("unban", "lift a node's ban: it may attest again", "unbanned"),
  {
    name: "bundle show",
    summary: "print the trust bundle (or a federated trust domain's) as PEM or as a SPIFFE bundle (JWKS)",
    options: {
      format: { type: "string", value: "pem|spiffe", description: "PEM certificates, or the SPIFFE bundle (JWKS) with the JWT keys too", default: "pem" },
      "trust-domain": { type: "string", value: "TD", description: "a federated trust domain: print the bundle last fetched from it", default: "this server's own bundle" },
      "data-dir": DATA_DIR,
      "admin-socket": ADMIN_OPTIONS["admin-socket"]!,
    },
    async run(v) {
      const format = optionalString(v, "format") ?? "pem";
      if (format !== "pem" && format !== "spiffe") throw new UsageError("--format must be pem or spiffe");
      const td = optionalString(v, "trust-domain");
      const path = td === undefined ? "/admin/bundle" : `/admin/federations/${encodeURIComponent(td)}/bundle`;
      const r = (await admin(v, "GET", path)) as { bundle_pem: string; spiffe_bundle: unknown };
      process.stdout.write(format === "pem" ? r.bundle_pem : `${JSON.stringify(r.spiffe_bundle, null, 2)}\n`);
      return 0;
    },
  },
  {
    name: "ca rotate",
    summary: "rotate the X.509 CA, JWT, WIT or access-token key: prepare, activate, retire, or auto (the next due step)",
    options: {
      kind: {
        type: "string",
        value: "x509|jwt|wit|token",
        description: "which key: the X.509 CA, the JWT-SVID, the WIT-SVID or the OAuth access-token signing key",
        default: "x509",
      },
      step: {
        type: "string",
        value: "STEP",
        description: "prepare (a next key, published in the bundle), activate (sign with it), retire (drop the old key), or auto (whichever is due)",
        default: "auto",
      },
      ...ADMIN_OPTIONS,
    },
    async run(v) {
      const kind = optionalString(v, "kind") ?? "x509";
      const step = optionalString(v, "step") ?? "auto";
      if (!(CA_KEY_KINDS as readonly string[]).includes(kind)) throw new UsageError("--kind must be x509, jwt, wit or token");
      if (!["prepare", "activate", "retire", "auto"].includes(step)) throw new UsageError("--step must be prepare, activate, retire or auto");
      const r = (await admin(v, "POST", "/admin/ca/rotate", { kind, step })) as { changed: string[]; notes?: string[] };
      return print(v, r, () => (r.changed.length ? r.changed.join("\n") : (r.notes ?? []).join("\n") || "nothing to do"));
    },
  },
  {
    name: "ca show",
    summary: "list CA, JWT and WIT keys with their rotation state",
    options: ADMIN_OPTIONS,
    async run(v) {
      const r = (await admin(v, "GET", "/admin/ca/keys")) as { keys: Array<{ id: string; kind: string; status: string; notAfter?: string }> };
      return print(v, r, () => r.keys.map((k) => `${k.kind}  ${k.status}  ${k.id}  notAfter=${k.notAfter ?? "-"}`).join("\n"));
    },
  },
  {
    name: "audit verify",
    summary: "verify the audit log's hash chain through the server, or with --offline read-only from its data directory",
    options: {
      checkpoint: {
        type: "string",
        value: "FILE",
        description: "also check that the head recorded in FILE by the previous run is still in place, then advance FILE (created on the first run; keep it off the server's host)",
      },
      offline: {
        type: "boolean",
        description: "verify without the server: open DIR/hallmark.db read-only (needs --data-dir, not --admin-socket)",
      },
      ...ADMIN_OPTIONS,
    },
    async run(v) {
      const file = optionalString(v, "checkpoint");
      const previous = file ? readCheckpoint(file) : undefined;
      const offline = v.offline === true;
      if (offline && optionalString(v, "admin-socket")) throw new UsageError("--offline reads the data directory: give --data-dir, not --admin-socket");
      const dbPath = databasePath({ dataDir: dataDirOf(v) });
      const r = offline ? await verifyStoredAuditChain(sqliteStoreOf(dataDirOf(v)), previous) : await verifyThroughServer(v, previous);
      // Written only after a clean walk: a broken log never moves the checkpoint forward.
      if (file && r.ok && r.records > 0) writeFileAtomic(file, `${JSON.stringify({ seq: r.records, hash: r.head })}\n`, 0o644);
      const mode = offline ? `offline (read-only open of ${dbPath}; no server asked)` : `server (verified by the server on ${socketOf(v)})`;
      print(v, { mode: offline ? "offline" : "server", ...r }, () =>
        [
          `mode: ${mode}`,
          r.ok
            ? `audit log intact: ${r.records} records, head ${r.head}${previous ? `; checkpoint record ${previous.seq} still in place` : ""}${file ? `; checkpoint now record ${r.records}` : ""}` +
              (r.tree ? `\ntransparency log intact: ${r.tree.size} leaves recomputed; last signed checkpoint (size ${r.tree.checkpointSize ?? "none"}) matches` : "")
            : `audit log BROKEN at record ${r.brokenAt}: ${r.reason}`,
        ].join("\n"),
      );
      return r.ok ? 0 : 1;
    },
  },
];

/** `hallmark federation create|list|show|refresh|update|delete` (src/cli/federation-commands.ts builds them on `admin`). */
export { admin as adminCall, print as printAnswer };

/** `hallmark node evict|ban|unban --spiffe-id ID`: one admin call each, the same shape. */
function nodeCommand(verb: "evict" | "ban" | "unban", summary: string, done: string): Command {
  return {
    name: `node ${verb}`,
    summary,
    options: { "spiffe-id": { ...SPIFFE_ID, description: "the node's SPIFFE ID, as 'node list' prints it" }, ...ADMIN_OPTIONS },
    async run(v) {
      const id = requireString(v, "spiffe-id");
      await admin(v, "POST", `/admin/nodes/${verb}`, { spiffe_id: id });
      return print(v, { [done]: id }, () => `${done} ${id}`);
    },
  };
}

async function verifyThroughServer(v: Record<string, unknown>, checkpoint: { seq: number; hash: string } | undefined): Promise<AuditVerification> {
  const query = checkpoint ? `?checkpoint_seq=${checkpoint.seq}&checkpoint_hash=${checkpoint.hash}` : "";
  try {
    return (await admin(v, "GET", `/admin/audit/verify${query}`)) as AuditVerification;
  } catch (e) {
    const errno = isHallmarkError(e) ? (e.cause as NodeJS.ErrnoException | undefined)?.code : undefined;
    if (errno !== "ENOENT" && errno !== "ECONNREFUSED") throw e;
    // No server answers: say how to verify without one, rather than guess that the user meant it.
    throw new HallmarkError("unavailable", `${(e as Error).message}; with the server stopped, add --offline to read its database directly`, { cause: e });
  }
}

/** A checkpoint file from an earlier `audit verify --checkpoint`; absent on the first run. */
function readCheckpoint(file: string): { seq: number; hash: string } | undefined {
  if (!existsSync(file)) return undefined;
  const text = readInputText(file, "--checkpoint");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new UsageError(`--checkpoint: ${file} is not a checkpoint written by 'hallmark audit verify'`);
  }
  const c = parsed as { seq?: unknown; hash?: unknown };
  if (!Number.isSafeInteger(c.seq) || (c.seq as number) < 1 || typeof c.hash !== "string" || !/^[0-9a-f]{64}$/.test(c.hash)) {
    throw new UsageError(`--checkpoint: ${file} is not a checkpoint written by 'hallmark audit verify'`);
  }
  return { seq: c.seq as number, hash: c.hash };
}
