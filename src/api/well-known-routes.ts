import type { FastifyInstance } from "fastify";
import { z } from "zod";
import type { CaAdministration } from "../service/ports.js";
import { defineRoute, registerRoute } from "./route-spec.js";
import { jsonObject } from "./wire-schemas.js";

export interface WellKnownRouteDeps {
  ca: Pick<CaAdministration, "spiffeBundle" | "jwtJwks">;
  /** `iss` and base URL of the OIDC discovery document (known once the listener is bound). */
  issuerUrl: () => string;
}

export const WELL_KNOWN_ROUTES = {
  spiffeBundle: defineRoute({
    operationId: "spiffeBundle",
    method: "GET",
    url: "/.well-known/spiffe-bundle",
    summary: "SPIFFE federation bundle endpoint",
    caller: "anyone",
    responses: { 200: { description: "The SPIFFE bundle (a JWKS with spiffe_sequence and spiffe_refresh_hint)", body: jsonObject } },
  }),
  openidConfiguration: defineRoute({
    operationId: "openidConfiguration",
    method: "GET",
    url: "/.well-known/openid-configuration",
    summary: "OIDC discovery for JWT-SVID verifiers",
    caller: "anyone",
    responses: {
      200: {
        description: "The OpenID Provider metadata a JWT-SVID verifier needs",
        body: z.object({
          issuer: z.string(),
          jwks_uri: z.string(),
          authorization_endpoint: z.string(),
          response_types_supported: z.array(z.string()),
          subject_types_supported: z.array(z.string()),
          id_token_signing_alg_values_supported: z.array(z.string()),
        }),
      },
    },
  }),
  jwks: defineRoute({
    operationId: "jwks",
    method: "GET",
    url: "/.well-known/jwks.json",
    summary: "The JWT-SVID signing keys",
    caller: "anyone",
    responses: { 200: { description: "A JWKS", body: jsonObject } },
  }),
};

/**
 * What relying parties fetch before they trust anything: the SPIFFE bundle at the federation
 * bundle endpoint path, and OIDC discovery plus JWKS for JWT-SVID verifiers. Served by the main
 * listener (the https_spiffe profile: its certificate is the server's X509-SVID) and, when
 * configured, by the Web PKI listener (the https_web profile). Neither asks for client auth.
 */
export async function wellKnownRoutes(app: FastifyInstance, deps: WellKnownRouteDeps): Promise<void> {
  const R = WELL_KNOWN_ROUTES;
  registerRoute(app, R.spiffeBundle, async (_in, _c, _req, reply) =>
    reply.type("application/json; charset=utf-8").send(await deps.ca.spiffeBundle()),
  );
  registerRoute(app, R.openidConfiguration, async () => ({
    issuer: deps.issuerUrl(),
    jwks_uri: `${deps.issuerUrl()}/.well-known/jwks.json`,
    authorization_endpoint: `${deps.issuerUrl()}/.well-known/no-authorization-endpoint`,
    response_types_supported: ["id_token"],
    subject_types_supported: ["public"],
    id_token_signing_alg_values_supported: ["ES256", "ES384", "RS256", "PS256"],
  }));
  registerRoute(app, R.jwks, async () => deps.ca.jwtJwks());
}
