import type { FastifyInstance, FastifyReply } from "fastify";
import { createReadStream } from "node:fs";
import { z } from "zod";
import type { FederationService } from "../federation/service.js";
import type { DelegationService } from "../oauth/delegation-service.js";
import type { AdminService } from "../service/admin.js";
import { CA_KEY_KINDS, type CaAdministration } from "../service/ports.js";
import type { DelegationRecord, EntryRecord } from "../store/types.js";
import { FEDERATION_ADMIN_ROUTES, federationAdminRoutes } from "./federation-routes.js";
import { serveOpenApi } from "./openapi.js";
import { defineRoute, registerRoute } from "./route-spec.js";
import { bundleAnswer, jsonObject, spiffeIdField, timestamp } from "./wire-schemas.js";

export interface AdminRouteDeps {
  admin: AdminService;
  ca: CaAdministration;
  delegations: DelegationService;
  federation: FederationService;
}

const ttl = z.number().int().positive().max(10 * 365 * 86400);
const nodeBody = z.object({ spiffe_id: spiffeIdField }).strict();
const entry = z.object({
  id: z.uuid(),
  spiffe_id: spiffeIdField,
  parent_id: spiffeIdField,
  selectors: z.array(z.string()),
  x509_ttl_seconds: z.number().int().nullable(),
  jwt_ttl_seconds: z.number().int().nullable(),
  dns_names: z.array(z.string()),
  hint: z.string().describe("passed to workloads with the SVID (Workload API hint)"),
  federates_with: z.array(z.string()).describe("foreign trust domains whose bundles the workloads receive"),
  created_at: timestamp,
});
const noContent = { 204: { description: "Done" } } as const;
// Shapes only: the delegation service judges the content (scope-token syntax, URLs, the TTL
// ceiling, attestor names) and refuses with codes of its own (delegation_invalid, ttl_invalid…).
const delegation = z.object({
  id: z.uuid(),
  actor: spiffeIdField,
  subject_issuer: z.string(),
  subject: z.string().nullable().describe("one person's sub; null: any subject of the issuer"),
  scopes: z.array(z.string()),
  audiences: z.array(z.string()),
  max_ttl_seconds: z.number().int(),
  require_dpop: z.boolean(),
  require_attestor: z.string().nullable(),
  created_at: timestamp,
});
const delegationId = z.object({ id: z.uuid() }).strict();

export const ADMIN_ROUTES = {
  createJoinToken: defineRoute({
    operationId: "createJoinToken",
    method: "POST",
    url: "/admin/tokens",
    summary: "A one-time join token bound to a SPIFFE ID (stored hashed)",
    caller: "admin",
    body: z.object({ spiffe_id: spiffeIdField, ttl_seconds: ttl }).strict(),
    responses: { 201: { description: "The token (shown once)", body: z.object({ token: z.string(), spiffe_id: spiffeIdField, expires_at: timestamp }) } },
    errors: ["ttl_invalid", "invalid_spiffe_id", "spiffe_id_outside_trust_domain", "spiffe_id_reserved"],
  }),
  createEntry: defineRoute({
    operationId: "createEntry",
    method: "POST",
    url: "/admin/entries",
    summary: "A registration entry",
    caller: "admin",
    body: z
      .object({
        spiffe_id: spiffeIdField,
        parent_id: spiffeIdField,
        selectors: z.array(z.string().max(600)).max(64),
        x509_ttl_seconds: ttl.optional(),
        jwt_ttl_seconds: ttl.optional(),
        dns_names: z.array(z.string().max(253)).max(32).optional(),
        hint: z.string().max(1024).optional().describe("passed to workloads with the SVID (Workload API hint)"),
        federates_with: z.array(z.string().max(255)).max(32).optional().describe("foreign trust domains (each with a federation relationship) whose bundles the workloads receive"),
      })
      .strict(),
    responses: { 201: { description: "The entry", body: entry } },
    errors: ["invalid_spiffe_id", "spiffe_id_outside_trust_domain", "spiffe_id_reserved", "invalid_selector", "entry_exists", "invalid_trust_domain", "federation_not_found", "federation_own_trust_domain"],
  }),
  listEntries: defineRoute({
    operationId: "listEntries",
    method: "GET",
    url: "/admin/entries",
    summary: "Registration entries, optionally filtered",
    caller: "admin",
    query: z.object({ parent_id: spiffeIdField.optional(), spiffe_id: spiffeIdField.optional() }).strict(),
    responses: { 200: { description: "The entries", body: z.object({ entries: z.array(entry) }) } },
  }),
  deleteEntry: defineRoute({
    operationId: "deleteEntry",
    method: "DELETE",
    url: "/admin/entries/:id",
    summary: "Delete a registration entry",
    caller: "admin",
    params: z.object({ id: z.uuid() }).strict(),
    responses: noContent,
    errors: ["entry_not_found"],
  }),
  createDelegation: defineRoute({
    operationId: "createDelegation",
    method: "POST",
    url: "/admin/delegations",
    summary: "A delegation: this agent may act for subjects of this issuer, within these bounds",
    caller: "admin",
    body: z
      .object({
        actor: spiffeIdField.describe("the agent's SPIFFE ID, in this trust domain, not under /hallmark"),
        subject_issuer: z.string().max(512).describe("iss of the subject tokens: an http(s) URL without query or fragment"),
        subject: z.string().max(1024).optional().describe("one person's sub; absent: any subject of the issuer"),
        scopes: z.array(z.string().max(256)).min(1).max(64).describe("RFC 6749 §3.3 scope tokens (printable ASCII, no space, quote or backslash)"),
        audiences: z.array(z.string().max(512)).min(1).max(16).describe("allowed audiences and resources: absolute URIs or logical names"),
        max_ttl_seconds: z.number().int().positive().describe("at most svid.maxTtl"),
        require_dpop: z.boolean().optional(),
        require_attestor: z.string().max(64).optional().describe("an attestor type (tpm, aws_nitro, amd_sev_snp, join_token) the actor's node must have attested with"),
      })
      .strict(),
    responses: { 201: { description: "The delegation", body: delegation } },
    errors: ["invalid_spiffe_id", "spiffe_id_outside_trust_domain", "spiffe_id_reserved", "delegation_invalid", "ttl_invalid", "unknown_attestor"],
  }),
  listDelegations: defineRoute({
    operationId: "listDelegations",
    method: "GET",
    url: "/admin/delegations",
    summary: "Delegations, optionally of one actor",
    caller: "admin",
    query: z.object({ actor: spiffeIdField.optional() }).strict(),
    responses: { 200: { description: "The delegations, oldest first", body: z.object({ delegations: z.array(delegation) }) } },
    errors: ["invalid_spiffe_id"],
  }),
  getDelegation: defineRoute({
    operationId: "getDelegation",
    method: "GET",
    url: "/admin/delegations/:id",
    summary: "One delegation",
    caller: "admin",
    params: delegationId,
    responses: { 200: { description: "The delegation", body: delegation } },
    errors: ["delegation_not_found"],
  }),
  deleteDelegation: defineRoute({
    operationId: "deleteDelegation",
    method: "DELETE",
    url: "/admin/delegations/:id",
    summary: "Delete a delegation",
    caller: "admin",
    params: delegationId,
    responses: noContent,
    errors: ["delegation_not_found"],
  }),
  listNodes: defineRoute({
    operationId: "listNodes",
    method: "GET",
    url: "/admin/nodes",
    summary: "Attested nodes",
    caller: "admin",
    responses: {
      200: {
        description: "The nodes",
        body: z.object({
          nodes: z.array(
            z.object({
              spiffe_id: spiffeIdField,
              attestor: z.string(),
              selectors: z.array(z.string()),
              serial: z.string().nullable(),
              expires_at: timestamp.nullable(),
              evicted: z.boolean(),
              evicted_at: timestamp.nullable(),
              banned: z.boolean(),
              can_reattest: z.boolean(),
            }),
          ),
        }),
      },
    },
  }),
  evictNode: defineRoute({
    operationId: "evictNode",
    method: "POST",
    url: "/admin/nodes/evict",
    summary: "Evict a node: every SVID it holds stops working at once",
    caller: "admin",
    body: nodeBody,
    responses: noContent,
    errors: ["invalid_spiffe_id", "node_not_found"],
  }),
  banNode: defineRoute({
    operationId: "banNode",
    method: "POST",
    url: "/admin/nodes/ban",
    summary: "Evict a node and refuse its re-attestation until unbanned",
    caller: "admin",
    body: nodeBody,
    responses: noContent,
    errors: ["invalid_spiffe_id", "node_not_found"],
  }),
  unbanNode: defineRoute({
    operationId: "unbanNode",
    method: "POST",
    url: "/admin/nodes/unban",
    summary: "Lift a node's ban",
    caller: "admin",
    body: nodeBody,
    responses: noContent,
    errors: ["invalid_spiffe_id", "node_not_found"],
  }),
  bundle: defineRoute({
    operationId: "adminBundle",
    method: "GET",
    url: "/admin/bundle",
    summary: "The trust bundle, as PEM and as a SPIFFE bundle",
    caller: "admin",
    responses: { 200: { description: "The trust bundle", body: bundleAnswer } },
  }),
  caKeys: defineRoute({
    operationId: "caKeys",
    method: "GET",
    url: "/admin/ca/keys",
    summary: "The CA and JWT signing keys and their rotation status",
    caller: "admin",
    responses: {
      200: {
        description: "The keys",
        body: z.object({
          keys: z.array(z.object({ id: z.string(), kind: z.string(), status: z.string(), notAfter: z.string().optional(), kid: z.string().optional() })),
        }),
      },
    },
  }),
  rotateCa: defineRoute({
    operationId: "rotateCa",
    method: "POST",
    url: "/admin/ca/rotate",
    summary: "One key rotation step",
    caller: "admin",
    body: z.object({ kind: z.enum(CA_KEY_KINDS), step: z.enum(["prepare", "activate", "retire", "auto"]) }).strict(),
    responses: { 200: { description: "What changed", body: z.object({ changed: z.array(z.string()), notes: z.array(z.string()).optional() }) } },
    errors: ["ca_rotation_in_progress", "ca_rotation_nothing_prepared"],
  }),
  verifyAudit: defineRoute({
    operationId: "verifyAudit",
    method: "GET",
    url: "/admin/audit/verify",
    summary: "Walk the audit log's hash chain, then recompute the transparency log's tree from the records",
    description: "checkpoint_seq and checkpoint_hash go together: the head a previous run recorded, which must still be there.",
    caller: "admin",
    query: z
      .object({ checkpoint_seq: z.coerce.number().int().positive().optional(), checkpoint_hash: z.string().regex(/^[0-9a-f]{64}$/).optional() })
      .strict()
      .refine((q) => (q.checkpoint_seq === undefined) === (q.checkpoint_hash === undefined), "give checkpoint_seq and checkpoint_hash together"),
    responses: {
      200: {
        description: "Whether the chain verifies (a broken chain is an answer, not an error)",
        body: z.discriminatedUnion("ok", [
          z.object({
            ok: z.literal(true),
            records: z.number().int(),
            head: z.string(),
            tree: z
              .object({ size: z.number().int(), checkpointSize: z.number().int().nullable() })
              .optional()
              .describe("the transparency log recomputed from the records: its size, and the last signed checkpoint's it matched"),
          }),
          z.object({
            ok: z.literal(false),
            records: z.number().int(),
            brokenAt: z.number().int(),
            reason: z.enum(["sequence_gap", "prev_hash_mismatch", "hash_mismatch", "checkpoint_missing", "checkpoint_mismatch", "tree_mismatch"]),
          }),
        ]),
      },
    },
  }),
  backup: defineRoute({
    operationId: "backup",
    method: "GET",
    url: "/admin/backup",
    summary: "A consistent snapshot of the database, taken while the server runs",
    description:
      "Streams a self-contained SQLite file; its SHA-256 is in the x-hallmark-sha256 header. The CLI writes it with the " +
      "operator's rights, so the server never needs write access outside its data directory. Keep the HSM token and PIN files too.",
    caller: "admin",
    responses: { 200: { description: "The SQLite database file", contentType: "application/vnd.sqlite3" } },
    errors: ["store_unavailable", "backup_unsupported"],
  }),
  ...FEDERATION_ADMIN_ROUTES,
  openApi: defineRoute({
    operationId: "adminOpenApi",
    method: "GET",
    url: "/admin/openapi.json",
    summary: "This document",
    caller: "admin",
    responses: { 200: { description: "OpenAPI 3.1 description of the admin API", body: jsonObject } },
  }),
};

/**
 * The admin API. It listens only on the local admin Unix socket (mode 0600 in the data
 * directory), as spire-server does: whoever can open the socket is the administrator.
 */
export async function adminRoutes(app: FastifyInstance, deps: AdminRouteDeps): Promise<void> {
  const R = ADMIN_ROUTES;
  registerRoute(app, R.createJoinToken, async ({ body }, _c, _req, reply) => {
    const t = await deps.admin.createJoinToken(body.spiffe_id, body.ttl_seconds);
    reply.code(201);
    return { token: t.token, spiffe_id: t.spiffeId, expires_at: t.expiresAt.toISOString() };
  });
  registerRoute(app, R.createEntry, async ({ body }, _c, _req, reply) => {
    const e = await deps.admin.createEntry({
      spiffeId: body.spiffe_id,
      parentId: body.parent_id,
      selectors: body.selectors,
      x509SvidTtlSeconds: body.x509_ttl_seconds,
      jwtSvidTtlSeconds: body.jwt_ttl_seconds,
      dnsNames: body.dns_names,
      hint: body.hint,
      federatesWith: body.federates_with,
    });
    reply.code(201);
    return entryJson(e);
  });
  registerRoute(app, R.listEntries, async ({ query }) => {
    const entries = await deps.admin.listEntries({
      ...(query.parent_id !== undefined ? { parentId: query.parent_id } : {}),
      ...(query.spiffe_id !== undefined ? { spiffeId: query.spiffe_id } : {}),
    });
    return { entries: entries.map(entryJson) };
  });
  registerRoute(app, R.deleteEntry, async ({ params }, _c, _req, reply) => {
    await deps.admin.deleteEntry(params.id);
    return reply.code(204).send();
  });
  registerRoute(app, R.createDelegation, async ({ body }, _c, _req, reply) => {
    const d = await deps.delegations.create({
      actor: body.actor,
      subjectIssuer: body.subject_issuer,
      subject: body.subject,
      scopes: body.scopes,
      audiences: body.audiences,
      maxTtlSeconds: body.max_ttl_seconds,
      requireDpop: body.require_dpop,
      requireAttestor: body.require_attestor,
    });
    reply.code(201);
    return delegationJson(d);
  });
  registerRoute(app, R.listDelegations, async ({ query }) => ({
    delegations: (await deps.delegations.list(query.actor !== undefined ? { actor: query.actor } : {})).map(delegationJson),
  }));
  registerRoute(app, R.getDelegation, async ({ params }) => delegationJson(await deps.delegations.get(params.id)));
  registerRoute(app, R.deleteDelegation, async ({ params }, _c, _req, reply) => {
    await deps.delegations.delete(params.id);
    return reply.code(204).send();
  });
  registerRoute(app, R.listNodes, async () => {
    const banned = new Set((await deps.admin.listNodeBans()).map((b) => b.spiffeId));
    return {
      nodes: (await deps.admin.listNodes()).map((n) => ({
        spiffe_id: n.spiffeId,
        attestor: n.attestorType,
        selectors: n.selectors,
        serial: n.serial ?? null,
        expires_at: n.expiresAt?.toISOString() ?? null,
        evicted: n.evicted,
        evicted_at: n.evictedAt?.toISOString() ?? null,
        banned: banned.has(n.spiffeId),
        can_reattest: n.canReattest,
      })),
    };
  });
  // evict, ban and unban: one SPIFFE ID in, 204 out.
  const nodeAction = (action: (spiffeId: string) => Promise<void>) =>
    async ({ body }: { body: z.output<typeof nodeBody> }, _c: undefined, _req: unknown, reply: FastifyReply) => {
      await action(body.spiffe_id);
      return reply.code(204).send();
    };
  registerRoute(app, R.evictNode, nodeAction((id) => deps.admin.evictNode(id)));
  registerRoute(app, R.banNode, nodeAction((id) => deps.admin.banNode(id)));
  registerRoute(app, R.unbanNode, nodeAction((id) => deps.admin.unbanNode(id)));
  registerRoute(app, R.bundle, async () => ({ bundle_pem: await deps.ca.bundlePem(), spiffe_bundle: await deps.ca.spiffeBundle() }));
  registerRoute(app, R.caKeys, async () => ({ keys: await deps.ca.keys() }));
  registerRoute(app, R.rotateCa, async ({ body }) => deps.admin.rotate(body.kind, body.step));
  registerRoute(app, R.verifyAudit, async ({ query }) =>
    deps.admin.verifyAudit(
      query.checkpoint_seq !== undefined && query.checkpoint_hash !== undefined ? { seq: query.checkpoint_seq, hash: query.checkpoint_hash } : undefined,
    ),
  );
  registerRoute(app, R.backup, async (_input, _c, _req, reply) => {
    const b = await deps.admin.backup();
    reply.raw.once("close", b.remove);
    return reply
      .header("content-type", "application/vnd.sqlite3")
      .header("content-length", b.bytes)
      .header("x-hallmark-sha256", b.sha256)
      .send(createReadStream(b.path));
  });
  await federationAdminRoutes(app, deps.federation);
  serveOpenApi(app, R.openApi, {
    title: "Hallmark admin API",
    description:
      "Administration of a Hallmark server. Served only on the admin Unix socket `<data-dir>/admin.sock` (mode 0600): " +
      "whoever can open the socket is the administrator, so no operation carries a security requirement.",
    routes: Object.values(ADMIN_ROUTES),
  });
}

function entryJson(e: EntryRecord) {
  return {
    id: e.id,
    spiffe_id: e.spiffeId,
    parent_id: e.parentId,
    selectors: e.selectors,
    x509_ttl_seconds: e.x509SvidTtlSeconds ?? null,
    jwt_ttl_seconds: e.jwtSvidTtlSeconds ?? null,
    dns_names: e.dnsNames,
    hint: e.hint ?? "",
    federates_with: e.federatesWith ?? [],
    created_at: e.createdAt.toISOString(),
  };
}

function delegationJson(d: DelegationRecord) {
  return {
    id: d.id,
    actor: d.actor,
    subject_issuer: d.subjectIssuer,
    subject: d.subject ?? null,
    scopes: d.scopes,
    audiences: d.audiences,
    max_ttl_seconds: d.maxTtlSeconds,
    require_dpop: d.requireDpop,
    require_attestor: d.requireAttestor ?? null,
    created_at: d.createdAt.toISOString(),
  };
}
