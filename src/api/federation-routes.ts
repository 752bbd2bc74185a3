import type { FastifyInstance } from "fastify";
import { z } from "zod";
import type { FederationService, ForeignBundle } from "../federation/service.js";
import { bundlePem } from "../issuer/bundle.js";
import type { FederationRecord } from "../store/types.js";
import { defineRoute, registerRoute } from "./route-spec.js";
import { bundleAnswer, jsonObject, spiffeIdField, timestamp } from "./wire-schemas.js";

/** Federation relationships (issue 14) on the admin socket; their refusals are FEDERATION_ERRORS codes. */
const profile = z.enum(["https_web", "https_spiffe"]);
const trustDomainParam = z.object({ trust_domain: z.string().min(1).max(255) }).strict();
const federation = z.object({
  trust_domain: z.string(),
  bundle_endpoint_url: z.string(),
  profile,
  endpoint_spiffe_id: spiffeIdField.nullable(),
  web_roots: z.string().describe("'default' (Node's bundled Web PKI roots), 'configured (N certificates)', or '-' for https_spiffe"),
  bundle_sequence: z.number().int().nullable(),
  bundle_refresh_hint_seconds: z.number().int().nullable(),
  has_bundle: z.boolean(),
  last_refresh_at: timestamp.nullable(),
  last_outcome: z.string().nullable().describe("updated, unchanged, or the code of the last refusal"),
  last_error: z.string().nullable(),
  next_refresh_at: timestamp,
  created_at: timestamp,
});
const trustBundle = z
  .union([z.string().max(60_000), jsonObject])
  .describe("the foreign trust domain's current SPIFFE bundle (JSON text or object): authenticates the first https_spiffe fetch");
const webRootsPem = z.string().max(60_000).describe("PEM roots the https_web endpoint's certificate must chain to; default the Web PKI roots Node ships");
const ADMIN_CODES = ["invalid_trust_domain", "invalid_spiffe_id", "federation_invalid", "federation_own_trust_domain", "federation_bundle_malformed", "federation_wrong_trust_domain", "federation_bundle_too_large"] as const;
const REFRESH_CODES = [
  "federation_not_found",
  "federation_fetch_failed",
  "federation_redirect_refused",
  "federation_endpoint_untrusted",
  "federation_endpoint_id_mismatch",
  "federation_endpoint_bundle_missing",
  "federation_bundle_too_large",
  "federation_bundle_malformed",
  "federation_wrong_trust_domain",
  "federation_sequence_regressed",
] as const;

export const FEDERATION_ADMIN_ROUTES = {
  createFederation: defineRoute({
    operationId: "createFederation",
    method: "POST",
    url: "/admin/federations",
    summary: "A federation relationship: where a foreign trust domain publishes its bundle, and how that endpoint is authenticated",
    caller: "admin",
    body: z
      .object({
        trust_domain: z.string().max(255),
        bundle_endpoint_url: z.string().max(2048),
        profile,
        endpoint_spiffe_id: spiffeIdField.optional().describe("https_spiffe: the SPIFFE ID the endpoint's X509-SVID carries"),
        trust_bundle: trustBundle.optional(),
        web_roots_pem: webRootsPem.optional(),
      })
      .strict(),
    responses: { 201: { description: "The relationship (its first refresh follows at once)", body: federation } },
    errors: [...ADMIN_CODES, "federation_exists"],
  }),
  listFederations: defineRoute({
    operationId: "listFederations",
    method: "GET",
    url: "/admin/federations",
    summary: "Federation relationships, in trust domain order",
    caller: "admin",
    responses: { 200: { description: "The relationships", body: z.object({ federations: z.array(federation) }) } },
  }),
  getFederation: defineRoute({
    operationId: "getFederation",
    method: "GET",
    url: "/admin/federations/:trust_domain",
    summary: "One federation relationship",
    caller: "admin",
    params: trustDomainParam,
    responses: { 200: { description: "The relationship", body: federation } },
    errors: ["invalid_trust_domain", "federation_not_found"],
  }),
  updateFederation: defineRoute({
    operationId: "updateFederation",
    method: "POST",
    url: "/admin/federations/:trust_domain",
    summary: "Change a relationship's endpoint parameters (or replace its bundle); the next refresh follows at once",
    caller: "admin",
    params: trustDomainParam,
    body: z
      .object({
        bundle_endpoint_url: z.string().max(2048).optional(),
        profile: profile.optional(),
        endpoint_spiffe_id: spiffeIdField.optional(),
        trust_bundle: trustBundle.optional(),
        web_roots_pem: webRootsPem.nullable().optional().describe("null: back to the default roots"),
      })
      .strict(),
    responses: { 200: { description: "The relationship", body: federation } },
    errors: [...ADMIN_CODES, "federation_not_found"],
  }),
  deleteFederation: defineRoute({
    operationId: "deleteFederation",
    method: "DELETE",
    url: "/admin/federations/:trust_domain",
    summary: "End a relationship: its bundle is forgotten and no longer handed to workloads",
    caller: "admin",
    params: trustDomainParam,
    responses: { 204: { description: "Done" } },
    errors: ["invalid_trust_domain", "federation_not_found"],
  }),
  refreshFederation: defineRoute({
    operationId: "refreshFederation",
    method: "POST",
    url: "/admin/federations/:trust_domain/refresh",
    summary: "Fetch the foreign bundle now; a refusal keeps the last good bundle and is audited",
    caller: "admin",
    params: trustDomainParam,
    responses: {
      200: {
        description: "What the refresh did",
        body: z.object({
          trust_domain: z.string(),
          outcome: z.enum(["updated", "unchanged"]),
          sequence: z.number().int().nullable(),
          previous_sequence: z.number().int().nullable(),
          next_refresh_at: timestamp,
        }),
      },
    },
    errors: ["invalid_trust_domain", ...REFRESH_CODES],
  }),
  federatedBundle: defineRoute({
    operationId: "federatedBundle",
    method: "GET",
    url: "/admin/federations/:trust_domain/bundle",
    summary: "The foreign trust domain's current bundle, as PEM and as the SPIFFE bundle it published",
    caller: "admin",
    params: trustDomainParam,
    responses: { 200: { description: "The bundle", body: bundleAnswer } },
    errors: ["invalid_trust_domain", "federation_not_found"],
  }),
};

export async function federationAdminRoutes(app: FastifyInstance, federation: FederationService): Promise<void> {
  const R = FEDERATION_ADMIN_ROUTES;
  const bundleText = (b: string | Record<string, unknown> | undefined) => (b === undefined || typeof b === "string" ? b : JSON.stringify(b));
  registerRoute(app, R.createFederation, async ({ body }, _c, _req, reply) => {
    const f = await federation.create({
      trustDomain: body.trust_domain,
      bundleEndpointUrl: body.bundle_endpoint_url,
      profile: body.profile,
      endpointSpiffeId: body.endpoint_spiffe_id,
      trustBundle: bundleText(body.trust_bundle),
      webRootsPem: body.web_roots_pem,
    });
    reply.code(201);
    return federationJson(f);
  });
  registerRoute(app, R.listFederations, async () => ({ federations: (await federation.list()).map(federationJson) }));
  registerRoute(app, R.getFederation, async ({ params }) => federationJson(await federation.get(params.trust_domain)));
  registerRoute(app, R.updateFederation, async ({ params, body }) =>
    federationJson(
      await federation.update(params.trust_domain, {
        bundleEndpointUrl: body.bundle_endpoint_url,
        profile: body.profile,
        endpointSpiffeId: body.endpoint_spiffe_id,
        trustBundle: bundleText(body.trust_bundle),
        webRootsPem: body.web_roots_pem,
      }),
    ),
  );
  registerRoute(app, R.deleteFederation, async ({ params }, _c, _req, reply) => {
    await federation.delete(params.trust_domain);
    return reply.code(204).send();
  });
  registerRoute(app, R.refreshFederation, async ({ params }) => {
    const r = await federation.refresh(params.trust_domain);
    return { trust_domain: r.trustDomain, outcome: r.outcome, sequence: r.sequence ?? null, previous_sequence: r.previousSequence ?? null, next_refresh_at: r.nextRefreshAt.toISOString() };
  });
  registerRoute(app, R.federatedBundle, async ({ params }) => foreignBundleAnswer(await federation.bundle(params.trust_domain)));
}

export function foreignBundleAnswer(b: ForeignBundle) {
  return { bundle_pem: bundlePem(b.bundle.x509Authorities), spiffe_bundle: JSON.parse(b.json) as Record<string, unknown> };
}

function federationJson(f: FederationRecord) {
  const roots = f.profile !== "https_web" ? "-" : f.webRootsPem ? `configured (${f.webRootsPem.split("-----BEGIN CERTIFICATE-----").length - 1} certificates)` : "default";
  return {
    trust_domain: f.trustDomain,
    bundle_endpoint_url: f.bundleEndpointUrl,
    profile: f.profile,
    endpoint_spiffe_id: f.endpointSpiffeId ?? null,
    web_roots: roots,
    bundle_sequence: f.bundleSequence ?? null,
    bundle_refresh_hint_seconds: f.refreshHintSeconds ?? null,
    has_bundle: f.bundle !== undefined,
    last_refresh_at: f.lastRefreshAt?.toISOString() ?? null,
    last_outcome: f.lastOutcome ?? null,
    last_error: f.lastError ?? null,
    next_refresh_at: f.nextRefreshAt.toISOString(),
    created_at: f.createdAt.toISOString(),
  };
}
