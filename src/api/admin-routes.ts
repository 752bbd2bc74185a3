import type { FastifyInstance } from "fastify";
import { createReadStream } from "node:fs";
import { z } from "zod";
import type { AdminService } from "../service/admin.js";
import type { CaAdministration } from "../service/ports.js";
import type { EntryRecord } from "../store/types.js";
import { parseBody } from "./problem.js";

export interface AdminRouteDeps {
  admin: AdminService;
  ca: CaAdministration;
}

const ttl = z.number().int().positive().max(10 * 365 * 86400);
const tokenBody = z.object({ spiffe_id: z.string().max(2048), ttl_seconds: ttl }).strict();
const entryBody = z
  .object({
    spiffe_id: z.string().max(2048),
    parent_id: z.string().max(2048),
    selectors: z.array(z.string().max(600)).max(64),
    x509_ttl_seconds: ttl.optional(),
    jwt_ttl_seconds: ttl.optional(),
    dns_names: z.array(z.string().max(253)).max(32).optional(),
    admin: z.boolean().optional(),
  })
  .strict();
const entryQuery = z.object({ parent_id: z.string().max(2048).optional(), spiffe_id: z.string().max(2048).optional() }).strict();
const entryParams = z.object({ id: z.string().uuid() }).strict();
const nodeBody = z.object({ spiffe_id: z.string().max(2048) }).strict();
const rotateBody = z.object({ kind: z.enum(["x509", "jwt"]), step: z.enum(["prepare", "activate", "retire", "auto"]) }).strict();
const auditVerifyQuery = z
  .object({ checkpoint_seq: z.coerce.number().int().positive().optional(), checkpoint_hash: z.string().regex(/^[0-9a-f]{64}$/).optional() })
  .strict()
  .refine((q) => (q.checkpoint_seq === undefined) === (q.checkpoint_hash === undefined), "give checkpoint_seq and checkpoint_hash together");

/**
 * The admin API. It listens only on the local admin Unix socket (mode 0600 in the data
 * directory), as spire-server does: whoever can open the socket is the administrator.
 */
export async function adminRoutes(app: FastifyInstance, deps: AdminRouteDeps): Promise<void> {
  app.post("/admin/tokens", async (req, reply) => {
    const b = parseBody(tokenBody, req.body);
    const t = await deps.admin.createJoinToken(b.spiffe_id, b.ttl_seconds);
    return reply.code(201).send({ token: t.token, spiffe_id: t.spiffeId, expires_at: t.expiresAt.toISOString() });
  });
  app.post("/admin/entries", async (req, reply) => {
    const b = parseBody(entryBody, req.body);
    const e = await deps.admin.createEntry({
      spiffeId: b.spiffe_id,
      parentId: b.parent_id,
      selectors: b.selectors,
      x509SvidTtlSeconds: b.x509_ttl_seconds,
      jwtSvidTtlSeconds: b.jwt_ttl_seconds,
      dnsNames: b.dns_names,
      admin: b.admin,
    });
    return reply.code(201).send(entryJson(e));
  });
  app.get("/admin/entries", async (req) => {
    const q = parseBody(entryQuery, req.query);
    const entries = await deps.admin.listEntries({
      ...(q.parent_id !== undefined ? { parentId: q.parent_id } : {}),
      ...(q.spiffe_id !== undefined ? { spiffeId: q.spiffe_id } : {}),
    });
    return { entries: entries.map(entryJson) };
  });
  app.delete("/admin/entries/:id", async (req, reply) => {
    const { id } = parseBody(entryParams, req.params);
    await deps.admin.deleteEntry(id);
    return reply.code(204).send();
  });
  app.get("/admin/nodes", async () => {
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
  app.post("/admin/nodes/evict", async (req, reply) => {
    const b = parseBody(nodeBody, req.body);
    await deps.admin.evictNode(b.spiffe_id);
    return reply.code(204).send();
  });
  app.post("/admin/nodes/ban", async (req, reply) => {
    const b = parseBody(nodeBody, req.body);
    await deps.admin.banNode(b.spiffe_id);
    return reply.code(204).send();
  });
  app.post("/admin/nodes/unban", async (req, reply) => {
    const b = parseBody(nodeBody, req.body);
    await deps.admin.unbanNode(b.spiffe_id);
    return reply.code(204).send();
  });
  app.get("/admin/bundle", async () => ({ bundle_pem: await deps.ca.bundlePem(), spiffe_bundle: await deps.ca.spiffeBundle() }));
  app.get("/admin/ca/keys", async () => ({ keys: await deps.ca.keys() }));
  app.post("/admin/ca/rotate", async (req) => {
    const b = parseBody(rotateBody, req.body);
    return deps.admin.rotate(b.kind, b.step);
  });
  // The snapshot streams to the CLI, which writes the operator's file with the operator's
  // rights: the server never needs write access outside its data directory.
  app.get("/admin/backup", async (_req, reply) => {
    const b = await deps.admin.backup();
    reply.raw.once("close", b.remove);
    return reply
      .header("content-type", "application/vnd.sqlite3")
      .header("content-length", b.bytes)
      .header("x-hallmark-sha256", b.sha256)
      .send(createReadStream(b.path));
  });
  app.get("/admin/audit/verify", async (req) => {
    const q = parseBody(auditVerifyQuery, req.query);
    return deps.admin.verifyAudit(q.checkpoint_seq !== undefined && q.checkpoint_hash !== undefined ? { seq: q.checkpoint_seq, hash: q.checkpoint_hash } : undefined);
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
    admin: e.admin,
    created_at: e.createdAt.toISOString(),
  };
}
