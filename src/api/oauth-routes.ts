import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Logger } from "pino";
import { z } from "zod";
import { HallmarkError } from "../errors.js";
import type { AccessTokenService } from "../oauth/access-tokens.js";
import type { ClientCredentials } from "../oauth/client-auth.js";
import { DPOP_MAX_HEADER_BYTES } from "../oauth/dpop.js";
import { OAUTH_PATHS, authorizationServerMetadata, metadataPath } from "../oauth/metadata.js";
import type { TokenExchangeService } from "../oauth/token-exchange.js";
import type { AccessTokenSigner } from "../service/ports.js";
import type { RateLimit } from "../service/rate-limit.js";
import { MAX_FORM_BYTES, acceptFormBodies } from "./form-body.js";
import { registerOAuthErrorHandler } from "./oauth-errors.js";
import { presentedSvid } from "./peer.js";
import { admitAnonymous, admitClient } from "./rate-limit.js";
import { defineRoute, registerRoute } from "./route-spec.js";
import { jsonObject } from "./wire-schemas.js";

/** The OAuth services, built once the listener is bound (the issuer may default to its URL). */
export interface OAuthServices {
  tokens: AccessTokenService;
  signer: Pick<AccessTokenSigner, "accessTokenJwks">;
  /** delegation.issuer, else jwt.issuer, else the bound https URL. */
  issuer: () => string;
  /** Set once the listener is bound (the subject-token verifier needs the final issuer); until then the token endpoint answers 503. */
  exchange?: TokenExchangeService | undefined;
}

export interface OAuthRouteDeps {
  /** Read at request time only: registering the routes touches no service. */
  oauth: OAuthServices;
  log: Logger;
  /**
   * The anonymous per-address allowance (limits.attestRate), spent by refused client
   * authentications only: within it each refusal is audited; past it, 429 and a summary.
   */
  refusalRateLimit?: RateLimit | undefined;
  /** Per authenticated client (limits.clientRate): every request it makes takes one. */
  clientRateLimit?: RateLimit | undefined;
}

/** RFC 8693 `audience` and RFC 8707 `resource` may repeat; no other parameter may (RFC 6749 §3.1). */
const REPEATABLE = new Set(["audience", "resource"]);
const MAX_TOKEN_CHARS = 16 * 1024;

const token = z.string().max(MAX_TOKEN_CHARS);
/**
 * Subject and actor tokens are bounded by the body limit only: the subject-token verifier refuses
 * what is larger than its own limit with subject_token_invalid, in an audited refusal.
 */
const exchangedToken = z.string().max(MAX_FORM_BYTES);
/** Client authentication by form parameters (the SPIFFE client-authentication draft: a JWT-SVID assertion). */
const clientAuth = {
  client_id: z.string().max(2048).optional().describe("the client's SPIFFE ID; when sent, it must be the SVID's"),
  client_assertion_type: z.string().max(256).optional().describe("urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"),
  client_assertion: z.string().max(8192).optional().describe("the client's JWT-SVID, aud = this server's issuer (or the endpoint URL)"),
};
/** OAuth ignores parameters it does not know (RFC 6749 §3.1): the schemas are not strict. */
const tokenForm = z.object({ token: token.optional().describe("the access token"), token_type_hint: z.string().max(64).optional(), ...clientAuth });
/** Introspection with proof (a Hallmark extension): what the resource server received with the token. */
const introspectionForm = tokenForm.extend({
  dpop_proof: z.string().max(DPOP_MAX_HEADER_BYTES).optional().describe("Hallmark extension: the DPoP proof the resource server received with the token; active only if it verifies"),
  dpop_method: z.string().max(32).optional().describe("with dpop_proof: the method of the resource server's request (the proof's htm)"),
  dpop_url: z.string().max(2048).optional().describe("with dpop_proof: the absolute URL of the resource server's request (the proof's htu; query ignored)"),
});
const tokenExchangeForm = z.object({
  grant_type: z.string().max(256).optional(),
  subject_token: exchangedToken.optional(),
  subject_token_type: z.string().max(256).optional(),
  actor_token: exchangedToken.optional(),
  actor_token_type: z.string().max(256).optional(),
  requested_token_type: z.string().max(256).optional(),
  scope: z.string().max(4096).optional(),
  audience: z.array(z.string().max(512)).max(16).optional().describe("repeatable"),
  resource: z.array(z.string().max(2048)).max(16).optional().describe("repeatable; absolute URIs without fragment"),
  expires_in: z.string().max(16).optional().describe("the lifetime wanted, in seconds (a Hallmark extension); at most the delegation's max TTL"),
  ...clientAuth,
});

const CLIENT_AUTH_NOTE =
  "The caller authenticates as a workload of the trust domain: mutual TLS with its X509-SVID (RFC 8705 tls_client_auth), or " +
  "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-spiffe with its JWT-SVID as client_assertion " +
  "(draft-ietf-oauth-spiffe-client-auth). The SVID must be one this server issued to a workload of a node that is not evicted. " +
  "Refusals use the OAuth error format (error, error_description) with Hallmark's `code` beside it.";

const metadataBody = z.object({
  issuer: z.string(),
  token_endpoint: z.string(),
  introspection_endpoint: z.string(),
  revocation_endpoint: z.string(),
  jwks_uri: z.string(),
  grant_types_supported: z.array(z.string()),
  response_types_supported: z.array(z.string()),
  token_endpoint_auth_methods_supported: z.array(z.string()),
  introspection_endpoint_auth_methods_supported: z.array(z.string()),
  revocation_endpoint_auth_methods_supported: z.array(z.string()),
  dpop_signing_alg_values_supported: z.array(z.string()),
  tls_client_certificate_bound_access_tokens: z.boolean(),
  introspection_dpop_proof_supported: z.boolean().describe("Hallmark extension: introspection checks a DPoP proof sent as dpop_proof, dpop_method, dpop_url"),
});

export const OAUTH_ROUTES = {
  oauthMetadata: defineRoute({
    operationId: "oauthMetadata",
    method: "GET",
    url: "/.well-known/oauth-authorization-server",
    summary: "OAuth 2.0 authorization server metadata (RFC 8414)",
    caller: "anyone",
    errorFormat: "oauth",
    responses: { 200: { description: "The metadata of the token service", body: metadataBody } },
  }),
  oauthMetadataForIssuerPath: defineRoute({
    operationId: "oauthMetadataForIssuerPath",
    method: "GET",
    url: "/.well-known/oauth-authorization-server/:issuer_path",
    summary: "The same metadata, for an issuer with a one-segment path (RFC 8414 §3.1: the well-known segment precedes the issuer's path)",
    caller: "anyone",
    params: z.object({ issuer_path: z.string().min(1).max(256).describe("the issuer's path, e.g. `tenant` for https://host/tenant") }).strict(),
    errorFormat: "oauth",
    responses: { 200: { description: "The metadata of the token service", body: metadataBody } },
    errors: ["not_found"],
  }),
  oauthJwks: defineRoute({
    operationId: "oauthJwks",
    method: "GET",
    url: OAUTH_PATHS.jwks,
    summary: "The access-token signing keys (prepared, active, previous) as a JWKS",
    caller: "anyone",
    errorFormat: "oauth",
    responses: { 200: { description: "A JWKS (kid, alg, use sig); not the SPIFFE bundle: access tokens are not SVIDs", body: jsonObject } },
  }),
  oauthToken: defineRoute({
    operationId: "oauthToken",
    method: "POST",
    url: OAUTH_PATHS.token,
    summary: "Token exchange (RFC 8693): an access token for an agent acting for a person",
    description:
      `${CLIENT_AUTH_NOTE} A DPoP proof (RFC 9449) for POST and this endpoint's URL binds the token to its key (token_type DPoP); ` +
      "a DPoP-bound subject token must be exchanged with a proof by its own key. With delegation.dpop.nonce, every answer carries DPoP-Nonce.",
    caller: "anyone",
    bodyType: "form",
    errorFormat: "oauth",
    body: tokenExchangeForm,
    responses: {
      200: {
        description: "The token response (RFC 8693 §2.2.1); scope is always present",
        body: z.object({ access_token: z.string(), issued_token_type: z.string(), token_type: z.enum(["DPoP", "Bearer"]), expires_in: z.number().int(), scope: z.string(), log_index: z.number().int() }),
      },
    },
    errors: [
      "oauth_invalid_request",
      "oauth_unsupported_grant_type",
      "oauth_unsupported_token_type",
      "oauth_invalid_resource",
      "oauth_client_unauthenticated",
      "rate_limited",
      "subject_token_invalid",
      "subject_token_expired",
      "subject_token_issuer_untrusted",
      "subject_token_audience",
      "subject_token_revoked",
      "actor_token_invalid",
      "actor_not_client",
      "may_act_refused",
      "act_too_deep",
      "delegation_denied",
      "delegation_attestation_insufficient",
      "scope_not_allowed",
      "audience_not_allowed",
      "ttl_not_allowed",
      "dpop_required",
      "dpop_proof_invalid",
      "dpop_proof_replayed",
      "dpop_nonce_required",
      "unavailable",
    ],
  }),
  oauthIntrospect: defineRoute({
    operationId: "oauthIntrospect",
    method: "POST",
    url: OAUTH_PATHS.introspection,
    summary: "Token introspection (RFC 7662): active only while the token's whole lineage is",
    description:
      `${CLIENT_AUTH_NOTE} With dpop_proof, dpop_method and dpop_url (a Hallmark extension; metadata introspection_dpop_proof_supported), ` +
      "the answer is active only when the proof verifies for this token and that request (ath, cnf.jkt, htm, htu, iat window, never replayed); " +
      "a bad proof answers {active:false} and is audited with its code. Without a proof, a DPoP-bound token is answered with its cnf and token_type DPoP.",
    caller: "anyone",
    bodyType: "form",
    errorFormat: "oauth",
    body: introspectionForm,
    responses: {
      200: {
        description: "`{active:false}` for anything inactive, unknown or malformed; else the token's claims and token_type (DPoP or Bearer)",
        body: z.object({ active: z.boolean() }).catchall(z.unknown()),
      },
    },
    errors: ["oauth_invalid_request", "oauth_client_unauthenticated", "rate_limited"],
  }),
  oauthRevoke: defineRoute({
    operationId: "oauthRevoke",
    method: "POST",
    url: OAUTH_PATHS.revocation,
    summary: "Token revocation (RFC 7009): the token and every token exchanged from it",
    description: CLIENT_AUTH_NOTE,
    caller: "anyone",
    bodyType: "form",
    errorFormat: "oauth",
    body: tokenForm,
    responses: { 200: { description: "Revoked, or nothing to revoke (an unknown or invalid token)" } },
    errors: ["oauth_invalid_request", "oauth_client_unauthenticated", "rate_limited", "token_not_issued_to_client"],
  }),
};

/**
 * The OAuth endpoints of the token service: one encapsulated plugin, so that its form parser and
 * its OAuth error format apply to these routes and nothing else.
 */
export async function oauthRoutes(app: FastifyInstance, deps: OAuthRouteDeps): Promise<void> {
  const R = OAUTH_ROUTES;
  acceptFormBodies(app, REPEATABLE);
  registerOAuthErrorHandler(app, deps.log);
  const noStore = (reply: FastifyReply) => reply.header("cache-control", "no-store").header("pragma", "no-cache");

  registerRoute(app, R.oauthMetadata, async () => metadataOf(deps.oauth.issuer(), "/.well-known/oauth-authorization-server"));
  registerRoute(app, R.oauthMetadataForIssuerPath, async ({ params }) =>
    metadataOf(deps.oauth.issuer(), `/.well-known/oauth-authorization-server/${params.issuer_path}`),
  );
  registerRoute(app, R.oauthJwks, async () => deps.oauth.signer.accessTokenJwks());

  registerRoute(app, R.oauthToken, async ({ body }, _c, req, reply) => {
    const exchange = deps.oauth.exchange;
    if (!exchange) throw new HallmarkError("unavailable", "the token service is starting");
    noStore(reply);
    // RFC 9449 §8: the nonce travels with every answer, the use_dpop_nonce refusal included
    // (headers set here survive into the error handler's answer).
    const nonce = exchange.nonce();
    if (nonce !== undefined) void reply.header("dpop-nonce", nonce);
    return exchange.exchange({ form: body, credentials: credentialsOf(req, reply, body, deps), dpop: req.headers.dpop });
  });
  registerRoute(app, R.oauthIntrospect, async ({ body }, _c, req, reply) => {
    const answer = await deps.oauth.tokens.introspect(credentialsOf(req, reply, body, deps), body.token, { proof: body.dpop_proof, method: body.dpop_method, url: body.dpop_url });
    noStore(reply);
    return answer;
  });
  registerRoute(app, R.oauthRevoke, async ({ body }, _c, req, reply) => {
    await deps.oauth.tokens.revoke(credentialsOf(req, reply, body, deps), body.token);
    return noStore(reply).code(200).send();
  });
}

/** The metadata, served only at the path RFC 8414 §3.1 derives from the issuer. */
function metadataOf(issuer: string, path: string): z.input<typeof metadataBody> {
  if (path !== metadataPath(issuer)) throw new HallmarkError("not_found", `no metadata at ${path}: this server's is at ${metadataPath(issuer)}`);
  return authorizationServerMetadata(issuer) as z.input<typeof metadataBody>;
}

/**
 * The client's credentials: the TLS client certificate (read only when needed), the form's
 * assertion, and the checks of the allowances: the caller's address's, should they be refused,
 * and the client's own once they are accepted.
 */
function credentialsOf(
  req: FastifyRequest,
  reply: FastifyReply,
  body: { client_id?: string | undefined; client_assertion_type?: string | undefined; client_assertion?: string | undefined },
  limits: Pick<OAuthRouteDeps, "refusalRateLimit" | "clientRateLimit">,
): ClientCredentials {
  return {
    presented: () => presentedSvid(req),
    clientId: body.client_id,
    assertionType: body.client_assertion_type,
    assertion: body.client_assertion,
    admitRefusal: () => admitAnonymous(limits.refusalRateLimit, req, reply),
    admitClient: (clientId) => admitClient(limits.clientRateLimit, clientId, req, reply),
  };
}
