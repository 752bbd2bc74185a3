import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Logger } from "pino";
import { z } from "zod";
import type { AttestationOutcome, AttestationService } from "../service/attestation.js";
import type { Metrics } from "../service/metrics.js";
import { type NodeIssuanceService, PAGE_TOKEN, type WorkloadJwt } from "../service/node-issuance.js";
import type { RateLimit } from "../service/rate-limit.js";
import type { CaAdministration, IssuedX509 } from "../service/ports.js";
import type { EntryRecord } from "../store/types.js";
import type { FederationService } from "../federation/service.js";
import { jwtJwks } from "../issuer/bundle.js";
import { pemBlocks, pemChain } from "../pki/pem.js";
import { errorSpec } from "../error-codes.js";
import { isHallmarkError } from "../errors.js";
import { serveOpenApi } from "./openapi.js";
import { carriesNodeProof, provenSvid } from "./node-proof.js";
import { OAUTH_ROUTES, type OAuthServices, oauthRoutes } from "./oauth-routes.js";
import { LOG_ROUTES, type LogRouteDeps, logRoutes } from "./log-routes.js";
import { authenticatedNode, presentedSvid } from "./peer.js";
import { admitAnonymous, admitIssuance, rateLimitHook } from "./rate-limit.js";
import { defineRoute, registerRoute } from "./route-spec.js";
import { type WellKnownRouteDeps, WELL_KNOWN_ROUTES, wellKnownRoutes } from "./well-known-routes.js";
import { bundleAnswer, jsonObject, spiffeIdField, timestamp } from "./wire-schemas.js";

export interface PublicRouteDeps extends WellKnownRouteDeps, LogRouteDeps {
  attestation: AttestationService;
  nodes: NodeIssuanceService;
  ca: CaAdministration;
  metrics: Metrics;
  ready: () => boolean;
  /** The token service (src/api/oauth-routes.ts): read at request time only. */
  oauth: OAuthServices;
  /** The per-address limit of the anonymous attestation endpoints; none in in-process tests. */
  attestRateLimit?: RateLimit | undefined;
  /** Per node: the SVIDs its workloads may be issued (limits.issuanceRate); renewal is not counted. */
  issuanceRateLimit?: RateLimit | undefined;
  /** Per OAuth client: its token exchanges, introspections and revocations (limits.clientRate). */
  clientRateLimit?: RateLimit | undefined;
  /** Foreign bundles for entries that federate (issue 14); none: no federated_bundles are sent. */
  federation?: Pick<FederationService, "bundles"> | undefined;
}

const MAX_CSR_CHARS = 16 * 1024;
/** Requests per POST /v1/svids/x509/batch: 64 CSRs of a few hundred bytes stay far below the body limit. */
export const MAX_X509_BATCH = 64;
/** Requests per POST /v1/svids/jwt/batch: as many as an X.509 batch. */
export const MAX_JWT_BATCH = 64;
/** The longest long poll of GET /v1/node/entries: well inside clients' 30 s answer timeout and limits.requestTimeout's default. */
export const MAX_ENTRY_WAIT_SECONDS = 20;
const audience = z.array(z.string()).min(1).max(16);
const csr = z.string().min(1).max(MAX_CSR_CHARS).describe("PKCS#10 CSR, PEM (or base64 DER); its signature is the proof of possession");
const params = z.object({ id: z.uuid().describe("the session id from POST /v1/attest/sessions") }).strict();

// Answers (documentation only: no reply is validated at run time).
/** The issuance's leaf in the transparency log: GET /v1/log/receipt/<log_index> once a checkpoint covers it. */
const logIndex = z.number().int().min(0).describe("the issuance's index in the transparency log (its audit record's seq - 1)");
const svidAnswer = z.object({
  spiffe_id: spiffeIdField,
  log_index: logIndex,
  svid: z.object({ cert_chain_pem: z.string().describe("leaf first, then intermediates"), serial: z.string(), expires_at: timestamp }),
  bundle_pem: z.string().describe("the current trust bundle (every node answer carries it)"),
});
const attestationOutcome = z.discriminatedUnion("status", [
  z.object({ status: z.literal("challenge"), challenge: jsonObject.describe("the attestor's next round (TPM: credential activation)") }),
  svidAnswer.extend({ status: z.literal("issued"), selectors: z.array(z.string()) }),
]);

/** An entry as its node's agent needs it. */
const nodeEntry = z.object({
  id: z.uuid(),
  spiffe_id: spiffeIdField,
  selectors: z.array(z.string()),
  x509_ttl_seconds: z.number().int().nullable().describe("null: the server's default"),
  jwt_ttl_seconds: z.number().int().nullable().describe("null: the server's default"),
  dns_names: z.array(z.string()),
  hint: z.string(),
  federates_with: z.array(z.string()).describe("foreign trust domains whose bundles this entry's workloads receive"),
});
/** Foreign trust domain name → its X.509 authorities as PEM (issue 14). */
const federatedBundles = z.record(z.string(), z.string()).describe("for each trust domain the entry federates with: its X.509 authorities, PEM");
const federatedJwtBundles = z
  .record(z.string(), jsonObject)
  .describe("for each trust domain the entry federates with: its JWT authorities as a JWKS (kid, use sig, alg), to verify that domain's JWT-SVIDs");

/** A batch's answer: each request's result or refusal, in order, and the current bundle. */
const batchAnswer = (issued: z.ZodObject) =>
  z.object({
    results: z.array(z.union([issued, z.object({ spiffe_id: spiffeIdField, error: z.object({ code: z.string(), detail: z.string() }) })])),
    bundle_pem: z.string(),
  });

/**
 * A batch request's refusal, in its place in the answer. A server-side failure (5xx) is not one
 * request's refusal: it is thrown, and the whole batch answers it as problem+json.
 */
function batchRefusal(spiffeId: string, e: unknown): { spiffe_id: string; error: { code: string; detail: string } } {
  if (!isHallmarkError(e) || errorSpec(e.code).status >= 500) throw e;
  return { spiffe_id: spiffeId, error: { code: e.code, detail: e.message } };
}

/** Who may be attested, refused for the session or its evidence. */
const ATTESTATION_ERRORS = [
  "session_not_found",
  "session_expired",
  "session_used",
  "session_wrong_round",
  "invalid_evidence",
  "csr_malformed",
  "csr_signature_invalid",
  "csr_key_unsupported",
  "csr_requests_ca",
  "csr_san_not_allowed",
  "join_token_invalid",
  "join_token_expired",
  "join_token_used",
  "hardware_identity_changed",
  "node_banned",
  "spiffe_id_outside_trust_domain",
] as const;
/** A node credential refused (src/api/peer.ts, NodeIssuanceService.authenticate). */
const NODE_AUTH_ERRORS = [
  "client_cert_required",
  "client_cert_invalid",
  "node_proof_invalid",
  "node_proof_svid_invalid",
  "node_proof_requires_tls13",
  "node_proof_conflict",
  "node_svid_expired",
  "node_svid_superseded",
  "node_evicted",
  // Refused credentials past the address's allowance (limits.attestRate), and a node's workload
  // SVIDs past its allowance (limits.issuanceRate): 429 with Retry-After.
  "rate_limited",
] as const;
const WORKLOAD_ERRORS = ["not_entitled", "no_entries", "ambiguous_spiffe_id", "spiffe_id_outside_trust_domain"] as const;
const ATTESTOR_CODES_NOTE = "Each attestor also refuses with its own codes (src/attestors/<type>/errors.ts).";

export const PUBLIC_ROUTES = {
  healthz: defineRoute({
    operationId: "healthz",
    method: "GET",
    url: "/healthz",
    summary: "Liveness",
    caller: "anyone",
    responses: { 200: { description: "The process serves requests", body: z.object({ status: z.literal("ok") }) } },
  }),
  readyz: defineRoute({
    operationId: "readyz",
    method: "GET",
    url: "/readyz",
    summary: "Readiness",
    caller: "anyone",
    responses: {
      200: { description: "Ready to attest and issue", body: z.object({ status: z.literal("ready") }) },
      503: { description: "Still starting", body: z.object({ status: z.literal("not_ready") }) },
    },
  }),
  metrics: defineRoute({
    operationId: "metrics",
    method: "GET",
    url: "/metrics",
    summary: "Prometheus metrics",
    caller: "anyone",
    responses: { 200: { description: "Prometheus text format 0.0.4", body: z.string(), contentType: "text/plain; version=0.0.4" } },
  }),
  openSession: defineRoute({
    operationId: "openSession",
    method: "POST",
    url: "/v1/attest/sessions",
    summary: "Open an attestation session: a session id and a fresh single-use nonce",
    caller: "anyone",
    body: z.object({ attestor: z.string().min(1).max(64).describe("join_token, tpm, aws_nitro or amd_sev_snp") }).strict(),
    responses: {
      201: { description: "The session (expires after attestation.sessionTtl)", body: z.object({ session_id: z.uuid(), nonce: z.base64(), expires_at: timestamp }) },
    },
    errors: ["unknown_attestor"],
  }),
  submitEvidence: defineRoute({
    operationId: "submitEvidence",
    method: "POST",
    url: "/v1/attest/sessions/:id/evidence",
    summary: "Submit evidence bound to the session nonce and to the CSR key",
    description: ATTESTOR_CODES_NOTE,
    caller: "anyone",
    params,
    body: z.object({ csr, evidence: z.unknown().describe("the attestor's evidence; see README, Attestors") }).strict(),
    responses: { 200: { description: "The node's X509-SVID, or a further round", body: attestationOutcome } },
    errors: ATTESTATION_ERRORS,
  }),
  answerChallenge: defineRoute({
    operationId: "answerChallenge",
    method: "POST",
    url: "/v1/attest/sessions/:id/answer",
    summary: "Answer the attestor's challenge (TPM credential activation)",
    description: ATTESTOR_CODES_NOTE,
    caller: "anyone",
    params,
    body: z.object({ response: z.unknown().describe("the attestor's answer") }).strict(),
    responses: { 200: { description: "The node's X509-SVID, or a further round", body: attestationOutcome } },
    errors: ATTESTATION_ERRORS,
  }),
  renewNode: defineRoute({
    operationId: "renewNode",
    method: "POST",
    url: "/v1/node/renew",
    summary: "Renew a join-token node's SVID",
    caller: "node",
    body: z.object({ csr }).strict(),
    responses: { 200: { description: "The node's new X509-SVID", body: svidAnswer } },
    errors: [...NODE_AUTH_ERRORS, "reattestation_required", "csr_malformed", "csr_signature_invalid", "csr_key_unsupported", "csr_requests_ca"],
  }),
  fetchX509Svid: defineRoute({
    operationId: "fetchX509Svid",
    method: "POST",
    url: "/v1/svids/x509",
    summary: "An X509-SVID for an entry the node is entitled to",
    caller: "node",
    body: z.object({ csr, spiffe_id: spiffeIdField.optional().describe("needed when several entries apply") }).strict(),
    responses: { 200: { description: "The workload's X509-SVID", body: svidAnswer.extend({ federated_bundles: federatedBundles }) } },
    errors: [...NODE_AUTH_ERRORS, ...WORKLOAD_ERRORS, "csr_malformed", "csr_signature_invalid", "csr_key_unsupported", "csr_requests_ca"],
  }),
  nodeFederatedBundles: defineRoute({
    operationId: "nodeFederatedBundles",
    method: "GET",
    url: "/v1/node/federated-bundles",
    summary: "The SPIFFE bundles of the foreign trust domains this node's entries federate with (X.509 and JWT authorities)",
    caller: "node",
    responses: {
      200: {
        description: "Trust domain name → the SPIFFE bundle it published, as last fetched",
        body: z.object({ bundles: z.record(z.string(), jsonObject) }),
      },
    },
    errors: NODE_AUTH_ERRORS,
  }),
  fetchX509SvidBatch: defineRoute({
    operationId: "fetchX509SvidBatch",
    method: "POST",
    url: "/v1/svids/x509/batch",
    summary: "X509-SVIDs for several entries the node is entitled to, in one request",
    description:
      "Each request is judged, issued and audited on its own, as POST /v1/svids/x509 would: a refused one answers " +
      "`error` with its code in its place, and the others are issued.",
    caller: "node",
    body: z.object({ requests: z.array(z.object({ csr, spiffe_id: spiffeIdField }).strict()).min(1).max(MAX_X509_BATCH) }).strict(),
    responses: {
      200: {
        description: "One result per request, in order, and the current bundle",
        body: batchAnswer(z.object({ spiffe_id: spiffeIdField, svid: svidAnswer.shape.svid, log_index: logIndex, federated_bundles: federatedBundles })),
      },
    },
    errors: [...NODE_AUTH_ERRORS],
  }),
  fetchJwtSvid: defineRoute({
    operationId: "fetchJwtSvid",
    method: "POST",
    url: "/v1/svids/jwt",
    summary: "A JWT-SVID for an entry the node is entitled to",
    caller: "node",
    body: z
      .object({ audience, spiffe_id: spiffeIdField.optional().describe("needed when several entries apply") })
      .strict(),
    responses: {
      200: {
        description: "The workload's JWT-SVID",
        body: z.object({
          spiffe_id: spiffeIdField,
          token: z.string(),
          expires_at: timestamp,
          log_index: logIndex,
          bundle_pem: z.string(),
          federated_jwt_bundles: federatedJwtBundles,
        }),
      },
    },
    errors: [...NODE_AUTH_ERRORS, ...WORKLOAD_ERRORS, "invalid_audience"],
  }),
  fetchJwtSvidBatch: defineRoute({
    operationId: "fetchJwtSvidBatch",
    method: "POST",
    url: "/v1/svids/jwt/batch",
    summary: "JWT-SVIDs for several (entry, audience) pairs the node is entitled to, in one request",
    description:
      "Each request is judged, issued and audited on its own, as POST /v1/svids/jwt would: a refused one answers " +
      "`error` with its code in its place, and the others are issued. Their audit records share the group commit.",
    caller: "node",
    body: z.object({ requests: z.array(z.object({ audience, spiffe_id: spiffeIdField }).strict()).min(1).max(MAX_JWT_BATCH) }).strict(),
    responses: {
      200: {
        description: "One result per request, in order, and the current bundle",
        body: batchAnswer(z.object({ spiffe_id: spiffeIdField, token: z.string(), expires_at: timestamp, log_index: logIndex, federated_jwt_bundles: federatedJwtBundles })),
      },
    },
    errors: [...NODE_AUTH_ERRORS],
  }),
  fetchWitSvid: defineRoute({
    operationId: "fetchWitSvid",
    method: "POST",
    url: "/v1/svids/wit",
    summary: "A WIT-SVID binding the workload's public key, for an entry the node is entitled to",
    description:
      "The token (typ wit+jwt) carries the key as cnf.jwk; verify it with the keys of the SPIFFE bundle whose `use` is wit-svid. " +
      "The key must be EC P-256/P-384/P-521 or RSA of 2048-8192 bits, public members only, with an `alg` WIT-SVID allows (ES256/384/512, RS256/384/512, PS256/384/512).",
    caller: "node",
    body: z
      .object({
        // Loose on purpose: the issuer checks every member, so a bad key is refused with a wit_key_* code rather than invalid_request.
        public_key_jwk: jsonObject.describe("the workload's public key as a JWK (RFC 7517) with `alg`"),
        spiffe_id: spiffeIdField.optional().describe("needed when several entries apply"),
      })
      .strict(),
    responses: {
      200: {
        description: "The workload's WIT-SVID",
        body: z.object({ spiffe_id: spiffeIdField, token: z.string(), expires_at: timestamp, log_index: logIndex, bundle_pem: z.string() }),
      },
    },
    errors: [...NODE_AUTH_ERRORS, ...WORKLOAD_ERRORS, "wit_key_malformed", "wit_key_private", "wit_key_unsupported"],
  }),
  nodeEntries: defineRoute({
    operationId: "nodeEntries",
    method: "GET",
    url: "/v1/node/entries",
    summary: "The registration entries the node may fetch SVIDs for, in full or as the changes since a revision",
    description:
      "Without `since`, or when the server's change log cannot continue from it, the full list (`full: true`), " +
      "by pages: ask again with `page_after` set to `next_page` until it is absent, then poll with the first page's `revision`. " +
      "With `since`, only the creations and deletions that concern this node after that revision; `more` says to ask again at once. " +
      "With `since` and `wait`, an answer that would carry no change is held until an entry changes (on any replica) or `wait` seconds pass.",
    caller: "node",
    query: z
      .object({
        since: z.string().regex(/^\d{1,15}$/).transform(Number).optional().describe("a revision from an earlier answer"),
        page_after: z.string().regex(PAGE_TOKEN).optional().describe("the next_page of the previous full page (opaque)"),
        wait: z
          .string()
          .regex(/^\d{1,2}$/)
          .transform(Number)
          .refine((n) => n <= MAX_ENTRY_WAIT_SECONDS, `at most ${MAX_ENTRY_WAIT_SECONDS}`)
          .optional()
          .describe(`with since: seconds (at most ${MAX_ENTRY_WAIT_SECONDS}) to hold an answer with no change until an entry changes (a long poll)`),
      })
      .strict(),
    responses: {
      200: {
        description: "The entries or the changes, the revision to continue from, and the current bundle",
        body: z.discriminatedUnion("full", [
          z.object({
            full: z.literal(true),
            revision: z.number().int(),
            entries: z.array(nodeEntry),
            next_page: z.string().optional().describe("present when more entries follow: pass it as page_after"),
            bundle_pem: z.string(),
          }),
          z.object({
            full: z.literal(false),
            revision: z.number().int(),
            more: z.boolean(),
            changes: z.array(
              z.discriminatedUnion("op", [z.object({ op: z.literal("created"), entry: nodeEntry }), z.object({ op: z.literal("deleted"), id: z.uuid() })]),
            ),
            bundle_pem: z.string(),
          }),
        ]),
      },
    },
    errors: NODE_AUTH_ERRORS,
  }),
  bundle: defineRoute({
    operationId: "bundle",
    method: "GET",
    url: "/v1/bundle",
    summary: "The trust bundle, as PEM and as a SPIFFE bundle",
    caller: "anyone",
    responses: { 200: { description: "The trust bundle", body: bundleAnswer } },
  }),
  openApi: defineRoute({
    operationId: "openApi",
    method: "GET",
    url: "/openapi.json",
    summary: "This document",
    caller: "anyone",
    responses: { 200: { description: "OpenAPI 3.1 description of the public API", body: jsonObject } },
  }),
};

export async function publicRoutes(app: FastifyInstance, deps: PublicRouteDeps): Promise<void> {
  const R = PUBLIC_ROUTES;
  const bundlePem = () => deps.ca.bundlePem();

  const svidBody = async (spiffeId: string, svid: IssuedX509, logIndex: number) => ({
    spiffe_id: spiffeId,
    log_index: logIndex,
    svid: { cert_chain_pem: pemChain(svid.chain), serial: svid.serial, expires_at: svid.notAfter.toISOString() },
    bundle_pem: await bundlePem(),
  });

  /** The X.509 authorities (PEM) of the foreign domains an entry federates with, by trust domain name. */
  const federatedPem = async (trustDomains: readonly string[]) =>
    Object.fromEntries((await (deps.federation?.bundles(trustDomains) ?? [])).map((b) => [b.trustDomain, pemChain(b.bundle.x509Authorities)]));

  const outcomeBody = async (o: AttestationOutcome) =>
    o.status === "challenge"
      ? { status: "challenge" as const, challenge: o.challenge }
      : { status: "issued" as const, selectors: o.selectors, ...(await svidBody(o.spiffeId, o.svid, o.logIndex)) };

  registerRoute(app, R.healthz, async () => ({ status: "ok" as const }));
  registerRoute(app, R.readyz, async (_in, _c, _req, reply) => {
    if (deps.ready()) return { status: "ready" as const };
    reply.code(503);
    return { status: "not_ready" as const };
  });
  registerRoute(app, R.metrics, async (_in, _c, _req, reply) => reply.type("text/plain; version=0.0.4").send(deps.metrics.render()));

  // Anonymous and writing to the store: rate-limited per address.
  const anonymous = deps.attestRateLimit ? { onRequest: rateLimitHook(deps.attestRateLimit) } : {};
  registerRoute(app, R.openSession, async ({ body }, _c, _req, reply) => {
    const s = await deps.attestation.openSession(body.attestor);
    reply.code(201);
    return { session_id: s.sessionId, nonce: s.nonce.toString("base64"), expires_at: s.expiresAt.toISOString() };
  }, undefined, anonymous);
  registerRoute(app, R.submitEvidence, async ({ params, body }, _c, req) =>
    outcomeBody(await deps.attestation.submitEvidence(params.id, { csr: body.csr, evidence: body.evidence }, actorOf(req.ip))), undefined, anonymous,
  );
  registerRoute(app, R.answerChallenge, async ({ params, body }, _c, req) =>
    outcomeBody(await deps.attestation.answer(params.id, body.response, actorOf(req.ip))), undefined, anonymous,
  );

  // Node endpoints: mutual TLS with the node's SVID. Every answer carries the current bundle, so a
  // client keeps its trust bundle current through CA rotations without a separate call.
  // A node whose key stays in its TPM authenticates with a channel-bound proof instead (src/api/node-proof.ts).
  const anchors = async () => pemBlocks(await bundlePem());
  // A refused node credential spends the caller's anonymous allowance (limits.attestRate): past
  // it, 429 and the limiter's summary instead of an audit record each.
  const nodeOf = (req: FastifyRequest, reply: FastifyReply) => {
    const admitRefusal = () => admitAnonymous(deps.attestRateLimit, req, reply);
    return authenticatedNode(reply, () =>
      carriesNodeProof(req)
        ? deps.nodes.authenticateProof(actorOf(req.ip), (now) => provenSvid(req, now, anchors), admitRefusal)
        : deps.nodes.authenticate(presentedSvid(req), admitRefusal),
    );
  };
  registerRoute(app, R.renewNode, async ({ body }, node) => {
    const svid = await deps.nodes.renew(node, body.csr);
    return svidBody(node.spiffeId, svid, svid.logIndex);
  }, nodeOf);
  registerRoute(
    app,
    R.fetchX509Svid,
    async ({ body }, node, req, reply) => {
      admitIssuance(deps.issuanceRateLimit, node.spiffeId, 1, req, reply);
      const svid = await deps.nodes.workloadX509(node, body.csr, body.spiffe_id);
      return { ...(await svidBody(svid.spiffeId, svid, svid.logIndex)), federated_bundles: await federatedPem(svid.federatesWith) };
    },
    nodeOf,
  );
  registerRoute(
    app,
    R.nodeFederatedBundles,
    async (_in, node) => {
      const domains = (await deps.nodes.entitledEntries(node)).flatMap((e) => e.federatesWith ?? []);
      const foreign = await (deps.federation?.bundles(domains) ?? []);
      return { bundles: Object.fromEntries(foreign.map((b) => [b.trustDomain, JSON.parse(b.json) as Record<string, unknown>])) };
    },
    nodeOf,
  );
  registerRoute(
    app,
    R.fetchX509SvidBatch,
    async ({ body }, node, req, reply) => {
      admitIssuance(deps.issuanceRateLimit, node.spiffeId, body.requests.length, req, reply);
      const results = [];
      // One at a time: each issuance is one HSM signature and one audit record, as for single requests.
      for (const r of body.requests) {
        try {
          const svid = await deps.nodes.workloadX509(node, r.csr, r.spiffe_id);
          results.push({
            spiffe_id: svid.spiffeId,
            svid: { cert_chain_pem: pemChain(svid.chain), serial: svid.serial, expires_at: svid.notAfter.toISOString() },
            log_index: svid.logIndex,
            federated_bundles: await federatedPem(svid.federatesWith),
          });
        } catch (e) {
          results.push(batchRefusal(r.spiffe_id, e));
        }
      }
      return { results, bundle_pem: await bundlePem() };
    },
    nodeOf,
  );
  const jwtAnswer = async (jwt: WorkloadJwt) => {
    const foreign = await (deps.federation?.bundles(jwt.federatesWith) ?? []);
    return {
      spiffe_id: jwt.spiffeId,
      token: jwt.token,
      expires_at: jwt.expiresAt.toISOString(),
      log_index: jwt.logIndex,
      federated_jwt_bundles: Object.fromEntries(foreign.map((b) => [b.trustDomain, jwtJwks(b.bundle.jwtAuthorities)])),
    };
  };
  registerRoute(
    app,
    R.fetchJwtSvid,
    async ({ body }, node, req, reply) => {
      admitIssuance(deps.issuanceRateLimit, node.spiffeId, 1, req, reply);
      return { ...(await jwtAnswer(await deps.nodes.workloadJwt(node, body.audience, body.spiffe_id))), bundle_pem: await bundlePem() };
    },
    nodeOf,
  );
  registerRoute(
    app,
    R.fetchJwtSvidBatch,
    async ({ body }, node, req, reply) => {
      admitIssuance(deps.issuanceRateLimit, node.spiffeId, body.requests.length, req, reply);
      const settled = await deps.nodes.workloadJwts(node, body.requests.map((r) => ({ audience: r.audience, spiffeId: r.spiffe_id })));
      const results = [];
      for (const [i, s] of settled.entries()) {
        if (s.status === "fulfilled") {
          results.push(await jwtAnswer(s.value));
          continue;
        }
        results.push(batchRefusal(body.requests[i]!.spiffe_id, s.reason));
      }
      return { results, bundle_pem: await bundlePem() };
    },
    nodeOf,
  );
  registerRoute(
    app,
    R.fetchWitSvid,
    async ({ body }, node, req, reply) => {
      admitIssuance(deps.issuanceRateLimit, node.spiffeId, 1, req, reply);
      const wit = await deps.nodes.workloadWit(node, body.public_key_jwk, body.spiffe_id);
      return { spiffe_id: wit.spiffeId, token: wit.token, expires_at: wit.expiresAt.toISOString(), log_index: wit.logIndex, bundle_pem: await bundlePem() };
    },
    nodeOf,
  );
  registerRoute(
    app,
    R.nodeEntries,
    async ({ query }, node) => {
      const sync = await deps.nodes.entrySync(node, query.since, query.page_after, (query.wait ?? 0) * 1000);
      const bundle_pem = await bundlePem();
      if (sync.full) {
        return { full: true as const, revision: sync.revision, entries: sync.entries.map(nodeEntryJson), ...(sync.nextPage ? { next_page: sync.nextPage } : {}), bundle_pem };
      }
      const changes = [
        ...sync.deleted.map((id) => ({ op: "deleted" as const, id })),
        ...sync.created.map((e) => ({ op: "created" as const, entry: nodeEntryJson(e) })),
      ];
      return { full: false as const, revision: sync.revision, more: sync.more, changes, bundle_pem };
    },
    nodeOf,
  );

  // Trust bundle: public, as relying parties fetch it before they trust anything.
  registerRoute(app, R.bundle, async () => ({ bundle_pem: await bundlePem(), spiffe_bundle: await deps.ca.spiffeBundle() }));
  await wellKnownRoutes(app, deps);
  await logRoutes(app, deps);
  await app.register(oauthRoutes, { oauth: deps.oauth, log: app.log as unknown as Logger, refusalRateLimit: deps.attestRateLimit, clientRateLimit: deps.clientRateLimit });
  serveOpenApi(app, R.openApi, {
    title: "Hallmark public API",
    description:
      "Attestation, node and workload SVIDs, trust bundles. Errors are RFC 9457 problem+json with a stable `code` (src/error-codes.ts). " +
      "Node endpoints need the node's X509-SVID as the TLS client certificate, or (a TPM-resident node key) on TLS 1.3 the headers " +
      "Hallmark-Node-Svid (base64 DER chain, leaf first, comma-separated) and Hallmark-Node-Proof (the key's signature over the " +
      "connection's exporter value: label EXPORTER-hallmark-node-auth, context SHA-256 of the leaf, 32 bytes).",
    routes: [...Object.values(PUBLIC_ROUTES), ...Object.values(WELL_KNOWN_ROUTES), ...Object.values(OAUTH_ROUTES), ...Object.values(LOG_ROUTES)],
  });
}

function nodeEntryJson(e: EntryRecord) {
  return {
    id: e.id,
    spiffe_id: e.spiffeId,
    selectors: e.selectors,
    x509_ttl_seconds: e.x509SvidTtlSeconds ?? null,
    jwt_ttl_seconds: e.jwtSvidTtlSeconds ?? null,
    dns_names: e.dnsNames,
    hint: e.hint ?? "",
    federates_with: e.federatesWith ?? [],
  };
}

function actorOf(ip: string): string {
  return `peer:${ip}`;
}
