import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Logger } from "pino";
import { z } from "zod";
import { HallmarkError } from "../errors.js";
import type { AccessTokenService } from "../oauth/access-tokens.js";
import type { ClientCredentials } from "../oauth/client-auth.js";
import { OAUTH_PATHS, authorizationServerMetadata, metadataPath } from "../oauth/metadata.js";
import { parseTokenExchangeRequest } from "../oauth/token-request.js";
import type { AccessTokenSigner } from "../service/ports.js";
import { acceptFormBodies } from "./form-body.js";
import { registerOAuthErrorHandler } from "./oauth-errors.js";
import { presentedSvid } from "./peer.js";
import { defineRoute, registerRoute } from "./route-spec.js";
import { jsonObject } from "./wire-schemas.js";

/** The OAuth services, built once the listener is bound (the issuer may default to its URL). */
export interface OAuthServices {
  tokens: AccessTokenService;
  signer: Pick<AccessTokenSigner, "accessTokenJwks">;
  /** delegation.issuer, else jwt.issuer, else the bound https URL. */
  issuer: () => string;
}

export interface OAuthRouteDeps {
  /** Read at request time only: registering the routes touches no service. */
  oauth: OAuthServices;
  log: Logger;
}

/** RFC 8693 `audience` and RFC 8707 `resource` may repeat; no other parameter may (RFC 6749 §3.1). */
const REPEATABLE = new Set(["audience", "resource"]);
const MAX_TOKEN_CHARS = 16 * 1024;

const token = z.string().max(MAX_TOKEN_CHARS);
/** Client authentication by form parameters (the SPIFFE client-authentication draft: a JWT-SVID assertion). */
const clientAuth = {
  client_id: z.string().max(2048).optional().describe("the client's SPIFFE ID; when sent, it must be the SVID's"),
  client_assertion_type: z.string().max(256).optional().describe("urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"),
  client_assertion: z.string().max(8192).optional().describe("the client's JWT-SVID, aud = this server's issuer (or the endpoint URL)"),
};
/** OAuth ignores parameters it does not know (RFC 6749 §3.1): the schemas are not strict. */
const introspectionForm = z.object({ token: token.optional().describe("the access token"), token_type_hint: z.string().max(64).optional(), ...clientAuth });
const tokenExchangeForm = z.object({
  grant_type: z.string().max(256).optional(),
  subject_token: token.optional(),
  subject_token_type: z.string().max(256).optional(),
  actor_token: token.optional(),
  actor_token_type: z.string().max(256).optional(),
  requested_token_type: z.string().max(256).optional(),
  scope: z.string().max(4096).optional(),
  audience: z.array(z.string().max(512)).max(16).optional().describe("repeatable"),
  resource: z.array(z.string().max(2048)).max(16).optional().describe("repeatable; absolute URIs without fragment"),
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
    description: CLIENT_AUTH_NOTE,
    caller: "anyone",
    bodyType: "form",
    errorFormat: "oauth",
    body: tokenExchangeForm,
    responses: { 200: { description: "The token response (RFC 8693 §2.2.1)", body: jsonObject } },
    errors: ["oauth_invalid_request", "oauth_unsupported_grant_type", "oauth_unsupported_token_type", "oauth_invalid_resource", "oauth_client_unauthenticated"],
  }),
  oauthIntrospect: defineRoute({
    operationId: "oauthIntrospect",
    method: "POST",
    url: OAUTH_PATHS.introspection,
    summary: "Token introspection (RFC 7662): active only while the token's whole lineage is",
    description: CLIENT_AUTH_NOTE,
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
    errors: ["oauth_invalid_request", "oauth_client_unauthenticated"],
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
    body: introspectionForm,
    responses: { 200: { description: "Revoked, or nothing to revoke (an unknown or invalid token)" } },
    errors: ["oauth_invalid_request", "oauth_client_unauthenticated", "token_not_issued_to_client"],
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

  registerRoute(app, R.oauthToken, async ({ body }) => {
    parseTokenExchangeRequest(body);
    throw new HallmarkError("unavailable", "token exchange is not enabled on this server yet");
  });
  registerRoute(app, R.oauthIntrospect, async ({ body }, _c, req, reply) => {
    const answer = await deps.oauth.tokens.introspect(credentialsOf(req, body), body.token);
    noStore(reply);
    return answer;
  });
  registerRoute(app, R.oauthRevoke, async ({ body }, _c, req, reply) => {
    await deps.oauth.tokens.revoke(credentialsOf(req, body), body.token);
    return noStore(reply).code(200).send();
  });
}

/** The metadata, served only at the path RFC 8414 §3.1 derives from the issuer. */
function metadataOf(issuer: string, path: string): z.input<typeof metadataBody> {
  if (path !== metadataPath(issuer)) throw new HallmarkError("not_found", `no metadata at ${path}: this server's is at ${metadataPath(issuer)}`);
  return authorizationServerMetadata(issuer) as z.input<typeof metadataBody>;
}

/** The client's credentials: the TLS client certificate (read only when needed) and the form's assertion. */
function credentialsOf(req: FastifyRequest, body: { client_id?: string | undefined; client_assertion_type?: string | undefined; client_assertion?: string | undefined }): ClientCredentials {
  return { presented: () => presentedSvid(req), clientId: body.client_id, assertionType: body.client_assertion_type, assertion: body.client_assertion };
}
