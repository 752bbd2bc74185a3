import type { FastifyInstance } from "fastify";
import { z } from "zod";
import type { AttestationOutcome, AttestationService } from "../service/attestation.js";
import type { Metrics } from "../service/metrics.js";
import type { NodeIssuanceService } from "../service/node-issuance.js";
import type { AnonymousRateLimit } from "../service/rate-limit.js";
import type { CaAdministration, IssuedX509 } from "../service/ports.js";
import { pemChain } from "../pki/pem.js";
import { parseBody } from "./problem.js";
import { peerSpiffeId } from "./peer.js";
import { rateLimitHook } from "./rate-limit.js";
import { type WellKnownRouteDeps, wellKnownRoutes } from "./well-known-routes.js";

export interface PublicRouteDeps extends WellKnownRouteDeps {
  attestation: AttestationService;
  nodes: NodeIssuanceService;
  ca: CaAdministration;
  metrics: Metrics;
  ready: () => boolean;
  /** The per-address limit of the anonymous attestation endpoints; none in in-process tests. */
  attestRateLimit?: AnonymousRateLimit | undefined;
}

const MAX_CSR_CHARS = 16 * 1024;
const sessionId = z.string().uuid();
const csr = z.string().min(1).max(MAX_CSR_CHARS);
const openSessionBody = z.object({ attestor: z.string().min(1).max(64) }).strict();
const evidenceBody = z.object({ csr, evidence: z.unknown() }).strict();
const answerBody = z.object({ response: z.unknown() }).strict();
const renewBody = z.object({ csr }).strict();
const x509Body = z.object({ csr, spiffe_id: z.string().max(2048).optional() }).strict();
const jwtBody = z
  .object({ audience: z.array(z.string()).min(1).max(16), spiffe_id: z.string().max(2048).optional() })
  .strict();
const params = z.object({ id: sessionId }).strict();

export async function publicRoutes(app: FastifyInstance, deps: PublicRouteDeps): Promise<void> {
  const bundlePem = () => deps.ca.bundlePem();

  const svidBody = async (spiffeId: string, svid: IssuedX509) => ({
    spiffe_id: spiffeId,
    svid: { cert_chain_pem: pemChain(svid.chain), serial: svid.serial, expires_at: svid.notAfter.toISOString() },
    bundle_pem: await bundlePem(),
  });

  const outcomeBody = async (o: AttestationOutcome) =>
    o.status === "challenge"
      ? { status: "challenge", challenge: o.challenge }
      : { status: "issued", selectors: o.selectors, ...(await svidBody(o.spiffeId, o.svid)) };

  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    const ready = deps.ready();
    return reply.code(ready ? 200 : 503).send({ status: ready ? "ready" : "not_ready" });
  });
  app.get("/metrics", async (_req, reply) => reply.type("text/plain; version=0.0.4").send(deps.metrics.render()));

  // Anonymous and writing to the store: rate-limited per address.
  const anonymous = deps.attestRateLimit ? { onRequest: rateLimitHook(deps.attestRateLimit) } : {};
  app.post("/v1/attest/sessions", anonymous, async (req, reply) => {
    const body = parseBody(openSessionBody, req.body);
    const s = await deps.attestation.openSession(body.attestor);
    return reply.code(201).send({ session_id: s.sessionId, nonce: s.nonce.toString("base64"), expires_at: s.expiresAt.toISOString() });
  });
  app.post("/v1/attest/sessions/:id/evidence", anonymous, async (req) => {
    const { id } = parseBody(params, req.params);
    const body = parseBody(evidenceBody, req.body);
    return outcomeBody(await deps.attestation.submitEvidence(id, { csr: body.csr, evidence: body.evidence }, actorOf(req.ip)));
  });
  app.post("/v1/attest/sessions/:id/answer", anonymous, async (req) => {
    const { id } = parseBody(params, req.params);
    const body = parseBody(answerBody, req.body);
    return outcomeBody(await deps.attestation.answer(id, body.response, actorOf(req.ip)));
  });

  // Node endpoints: mutual TLS with the node's SVID.
  app.post("/v1/node/renew", async (req) => {
    const node = await deps.nodes.authenticate(peerSpiffeId(req));
    const body = parseBody(renewBody, req.body);
    return svidBody(node.spiffeId, await deps.nodes.renew(node, body.csr));
  });
  app.post("/v1/svids/x509", async (req) => {
    const node = await deps.nodes.authenticate(peerSpiffeId(req));
    const body = parseBody(x509Body, req.body);
    const svid = await deps.nodes.workloadX509(node, body.csr, body.spiffe_id);
    return svidBody(svid.spiffeId, svid);
  });
  app.post("/v1/svids/jwt", async (req) => {
    const node = await deps.nodes.authenticate(peerSpiffeId(req));
    const body = parseBody(jwtBody, req.body);
    const jwt = await deps.nodes.workloadJwt(node, body.audience, body.spiffe_id);
    return { spiffe_id: jwt.spiffeId, token: jwt.token, expires_at: jwt.expiresAt.toISOString() };
  });
  app.get("/v1/node/entries", async (req) => {
    const node = await deps.nodes.authenticate(peerSpiffeId(req));
    const entries = await deps.nodes.entitledEntries(node);
    return { entries: entries.map((e) => ({ id: e.id, spiffe_id: e.spiffeId, selectors: e.selectors })) };
  });

  // Trust bundle: public, as relying parties fetch it before they trust anything.
  app.get("/v1/bundle", async () => ({ bundle_pem: await bundlePem(), spiffe_bundle: await deps.ca.spiffeBundle() }));
  await wellKnownRoutes(app, deps);
}

function actorOf(ip: string): string {
  return `peer:${ip}`;
}
