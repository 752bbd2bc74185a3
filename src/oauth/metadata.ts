import { CLIENT_AUTH_METHODS } from "./client-auth.js";
import { DPOP_ALGORITHMS } from "./dpop.js";
import { TOKEN_EXCHANGE_GRANT } from "./token-request.js";

/** Where the OAuth endpoints are, relative to the issuer (the issuer is the server's public base URL). */
export const OAUTH_PATHS = {
  token: "/oauth2/token",
  introspection: "/oauth2/introspect",
  revocation: "/oauth2/revoke",
  jwks: "/oauth2/jwks",
} as const;

/** The URL of one of our endpoints under `issuer` (a trailing slash of the issuer is not doubled). */
export function endpointUrl(issuer: string, path: string): string {
  return `${issuer.replace(/\/$/, "")}${path}`;
}

/** Every value a client assertion's `aud` may carry: the issuer and our endpoint URLs. */
export function ownAudiences(issuer: string): string[] {
  return [issuer, ...Object.values(OAUTH_PATHS).map((p) => endpointUrl(issuer, p))];
}

/**
 * RFC 8414 §2 authorization server metadata. Only token exchange is served: no authorization
 * endpoint, so response_types_supported is empty. Clients authenticate with their SVIDs (RFC 8705
 * tls_client_auth; draft-ietf-oauth-spiffe-client-auth spiffe_x509 and spiffe_jwt) at every
 * endpoint. Access tokens are bound by DPoP, never by the TLS certificate (RFC 8705 §3).
 */
export function authorizationServerMetadata(issuer: string): Record<string, unknown> {
  const methods = [...CLIENT_AUTH_METHODS];
  return {
    issuer,
    token_endpoint: endpointUrl(issuer, OAUTH_PATHS.token),
    introspection_endpoint: endpointUrl(issuer, OAUTH_PATHS.introspection),
    revocation_endpoint: endpointUrl(issuer, OAUTH_PATHS.revocation),
    jwks_uri: endpointUrl(issuer, OAUTH_PATHS.jwks),
    grant_types_supported: [TOKEN_EXCHANGE_GRANT],
    response_types_supported: [],
    token_endpoint_auth_methods_supported: methods,
    introspection_endpoint_auth_methods_supported: methods,
    revocation_endpoint_auth_methods_supported: methods,
    dpop_signing_alg_values_supported: [...DPOP_ALGORITHMS],
    tls_client_certificate_bound_access_tokens: false,
    // Hallmark extension: POST /oauth2/introspect checks the DPoP proof a resource server sends
    // along (dpop_proof, dpop_method, dpop_url) and answers active only if it verifies.
    introspection_dpop_proof_supported: true,
  };
}

/**
 * The path of the metadata document for `issuer` (RFC 8414 §3.1): the well-known segment goes
 * between the host and the issuer's own path.
 */
export function metadataPath(issuer: string): string {
  const path = new URL(issuer).pathname.replace(/\/$/, "");
  return `/.well-known/oauth-authorization-server${path}`;
}
