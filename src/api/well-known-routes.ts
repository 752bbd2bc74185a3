import type { FastifyInstance } from "fastify";
import type { CaAdministration } from "../service/ports.js";

export interface WellKnownRouteDeps {
  ca: Pick<CaAdministration, "spiffeBundle" | "jwtJwks">;
  /** `iss` and base URL of the OIDC discovery document (known once the listener is bound). */
  issuerUrl: () => string;
}

/**
 * What relying parties fetch before they trust anything: the SPIFFE bundle at the federation
 * bundle endpoint path, and OIDC discovery plus JWKS for JWT-SVID verifiers. Served by the main
 * listener (the https_spiffe profile: its certificate is the server's X509-SVID) and, when
 * configured, by the Web PKI listener (the https_web profile). Neither asks for client auth.
 */
export async function wellKnownRoutes(app: FastifyInstance, deps: WellKnownRouteDeps): Promise<void> {
  app.get("/.well-known/spiffe-bundle", async (_req, reply) => reply.type("application/json; charset=utf-8").send(await deps.ca.spiffeBundle()));
  app.get("/.well-known/openid-configuration", async () => ({
    issuer: deps.issuerUrl(),
    jwks_uri: `${deps.issuerUrl()}/.well-known/jwks.json`,
    authorization_endpoint: `${deps.issuerUrl()}/.well-known/no-authorization-endpoint`,
    response_types_supported: ["id_token"],
    subject_types_supported: ["public"],
    id_token_signing_alg_values_supported: ["ES256", "ES384", "RS256", "PS256"],
  }));
  app.get("/.well-known/jwks.json", async () => deps.ca.jwtJwks());
}
