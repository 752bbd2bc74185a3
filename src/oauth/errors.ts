import { errorFactory, type ErrorTable } from "../errors.js";

/**
 * Codes of delegation: token exchange (RFC 8693), DPoP (RFC 9449), introspection (RFC 7662),
 * revocation (RFC 7009) and the delegation policies behind them. The OAuth endpoints answer in
 * the OAuth error format (RFC 6749 §5.2) with `error` from OAUTH_ERROR_OF and our `code` beside
 * it; the admin endpoints answer problem+json like every other route.
 */
export const OAUTH_ERRORS = {
  // The request itself
  oauth_invalid_request: { status: 400, title: "The token request is malformed or misses a required parameter" },
  oauth_unsupported_grant_type: { status: 400, title: "Only the token-exchange grant is supported" },
  oauth_unsupported_token_type: { status: 400, title: "The token type is not one this server accepts for that parameter" },
  oauth_invalid_resource: { status: 400, title: "A resource parameter is not an absolute URI without a fragment (RFC 8707 §2)" },
  // Client authentication (RFC 8705 tls_client_auth, JWT-SVID client assertion)
  oauth_client_unauthenticated: { status: 401, title: "The client did not authenticate with a valid SVID" },
  // Subject and actor tokens
  subject_token_invalid: { status: 400, title: "The subject token does not verify (format, algorithm, signature or claims)" },
  subject_token_expired: { status: 400, title: "The subject token has expired or is not yet valid" },
  subject_token_issuer_untrusted: { status: 400, title: "The subject token's issuer is not a configured subject issuer" },
  subject_token_audience: { status: 400, title: "The subject token is not for an audience this issuer's configuration accepts" },
  subject_token_revoked: { status: 400, title: "The subject token is a Hallmark token that was revoked or whose lineage was" },
  actor_token_invalid: { status: 400, title: "The actor token is not a valid JWT-SVID of this trust domain" },
  actor_not_client: { status: 400, title: "The actor token's subject is not the authenticated client" },
  may_act_refused: { status: 400, title: "The subject token's may_act claim does not name this actor" },
  act_too_deep: { status: 400, title: "The delegation chain (nested act claims) is deeper than delegation.maxActDepth" },
  // The delegation policy
  delegation_denied: { status: 400, title: "No delegation lets this actor act for this subject" },
  delegation_attestation_insufficient: { status: 400, title: "The delegation requires the actor's node to be attested by another attestor" },
  scope_not_allowed: { status: 400, title: "The requested scope exceeds what the subject token and the delegation allow" },
  audience_not_allowed: { status: 400, title: "The requested audience or resource is not one the delegation allows" },
  ttl_not_allowed: { status: 400, title: "The requested lifetime exceeds what the delegation allows" },
  // DPoP (RFC 9449)
  dpop_required: { status: 400, title: "A DPoP proof is required" },
  dpop_proof_invalid: { status: 400, title: "The DPoP proof is invalid" },
  dpop_proof_replayed: { status: 400, title: "The DPoP proof's jti was already used" },
  dpop_nonce_required: { status: 400, title: "The DPoP proof must carry the server's current nonce" },
  // Access tokens presented to Hallmark or checked by a resource server (RFC 6750, RFC 9449 §7)
  access_token_invalid: { status: 401, title: "The access token is invalid, expired or revoked" },
  access_token_dpop_bound: { status: 401, title: "The access token is DPoP-bound and was presented without a matching proof" },
  // Revocation (RFC 7009 §2.1: a client revokes only the tokens issued to it)
  token_not_issued_to_client: { status: 400, title: "The token was not issued to the client asking to revoke it" },
  // Administration of delegations
  delegation_invalid: { status: 400, title: "The delegation is not valid" },
  delegation_not_found: { status: 404, title: "No such delegation" },
  // The client side (src/client/token-exchange.ts): what an agent reports about an authorization
  // server; never answered by Hallmark's own endpoints.
  oauth_metadata_invalid: { status: 502, title: "The authorization server's metadata (RFC 8414) is not for the issuer asked, or names no https token endpoint" },
  oauth_refused: { status: 400, title: "The authorization server refused the request without a Hallmark code (its OAuth error is in the message)" },
} as const satisfies ErrorTable;

export type OAuthErrorCode = keyof typeof OAUTH_ERRORS;

/** The OAuth `error` value each code answers with on the OAuth endpoints. */
export const OAUTH_ERROR_OF: Readonly<Record<OAuthErrorCode, string>> = {
  oauth_invalid_request: "invalid_request",
  oauth_unsupported_grant_type: "unsupported_grant_type",
  oauth_unsupported_token_type: "invalid_request",
  oauth_invalid_resource: "invalid_target",
  oauth_client_unauthenticated: "invalid_client",
  subject_token_invalid: "invalid_grant",
  subject_token_expired: "invalid_grant",
  subject_token_issuer_untrusted: "invalid_grant",
  subject_token_audience: "invalid_grant",
  subject_token_revoked: "invalid_grant",
  actor_token_invalid: "invalid_grant",
  actor_not_client: "invalid_grant",
  may_act_refused: "invalid_grant",
  act_too_deep: "invalid_grant",
  delegation_denied: "unauthorized_client",
  delegation_attestation_insufficient: "unauthorized_client",
  scope_not_allowed: "invalid_scope",
  audience_not_allowed: "invalid_target",
  ttl_not_allowed: "invalid_request",
  dpop_required: "invalid_dpop_proof",
  dpop_proof_invalid: "invalid_dpop_proof",
  dpop_proof_replayed: "invalid_dpop_proof",
  dpop_nonce_required: "use_dpop_nonce",
  access_token_invalid: "invalid_token",
  access_token_dpop_bound: "invalid_token",
  token_not_issued_to_client: "unauthorized_client",
  delegation_invalid: "invalid_request",
  delegation_not_found: "invalid_request",
  oauth_metadata_invalid: "server_error",
  oauth_refused: "invalid_request",
};

export const oauthError = errorFactory(OAUTH_ERRORS);
