import { oauthError } from "./errors.js";
import { parseScope } from "./scope.js";

/**
 * The parameters of a token-exchange request (RFC 8693 §2.1), checked for shape before anything
 * is verified: which are required, which go together, which token types are understood.
 */

export const TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange";

export const TOKEN_TYPES = {
  accessToken: "urn:ietf:params:oauth:token-type:access_token",
  jwt: "urn:ietf:params:oauth:token-type:jwt",
  idToken: "urn:ietf:params:oauth:token-type:id_token",
} as const;

/** What a subject token may be: a person's token from the IdP, or one of ours (a chain). */
const SUBJECT_TOKEN_TYPES: readonly string[] = [TOKEN_TYPES.accessToken, TOKEN_TYPES.jwt, TOKEN_TYPES.idToken];
/** The actor token is the agent's JWT-SVID. */
const ACTOR_TOKEN_TYPES: readonly string[] = [TOKEN_TYPES.jwt];
/** What we issue: an RFC 9068 JWT access token, which is both. */
const REQUESTED_TOKEN_TYPES: readonly string[] = [TOKEN_TYPES.accessToken, TOKEN_TYPES.jwt];


export interface TokenExchangeRequest {
  subjectToken: string;
  subjectTokenType: string;
  actorToken?: string | undefined;
  actorTokenType?: string | undefined;
  requestedTokenType: string;
  /** Requested scope tokens, in order, without repeats; empty when none was asked. */
  scope: string[];
  audience: string[];
  /** Absolute URIs without fragment (RFC 8707). */
  resource: string[];
  /** The lifetime asked for, in seconds (`expires_in`, a Hallmark extension); undefined: the server's default. */
  requestedTtlSeconds?: number | undefined;
}

/** The form as the OAuth routes parse it: one string per parameter, arrays for the repeatable ones. */
export interface TokenExchangeForm {
  grant_type?: string | undefined;
  subject_token?: string | undefined;
  subject_token_type?: string | undefined;
  actor_token?: string | undefined;
  actor_token_type?: string | undefined;
  requested_token_type?: string | undefined;
  scope?: string | undefined;
  audience?: string[] | undefined;
  resource?: string[] | undefined;
  expires_in?: string | undefined;
}

const invalid = (why: string) => oauthError("oauth_invalid_request", why);

export function parseTokenExchangeRequest(f: TokenExchangeForm): TokenExchangeRequest {
  if (f.grant_type === undefined) throw invalid("grant_type is required");
  if (f.grant_type !== TOKEN_EXCHANGE_GRANT) throw oauthError("oauth_unsupported_grant_type", `grant_type must be ${TOKEN_EXCHANGE_GRANT}`);
  if (!f.subject_token) throw invalid("subject_token is required");
  if (!f.subject_token_type) throw invalid("subject_token_type is required");
  if (!SUBJECT_TOKEN_TYPES.includes(f.subject_token_type)) {
    throw oauthError("oauth_unsupported_token_type", `subject_token_type must be one of ${SUBJECT_TOKEN_TYPES.join(", ")}`);
  }
  // §2.1: actor_token_type is REQUIRED when actor_token is present and MUST NOT be sent otherwise.
  if ((f.actor_token === undefined) !== (f.actor_token_type === undefined)) {
    throw invalid("actor_token and actor_token_type go together: send both or neither");
  }
  if (f.actor_token_type !== undefined && !ACTOR_TOKEN_TYPES.includes(f.actor_token_type)) {
    throw oauthError("oauth_unsupported_token_type", `actor_token_type must be ${TOKEN_TYPES.jwt} (the agent's JWT-SVID)`);
  }
  const requestedTokenType = f.requested_token_type ?? TOKEN_TYPES.accessToken;
  if (!REQUESTED_TOKEN_TYPES.includes(requestedTokenType)) {
    throw oauthError("oauth_unsupported_token_type", `requested_token_type must be one of ${REQUESTED_TOKEN_TYPES.join(", ")}`);
  }
  return {
    subjectToken: f.subject_token,
    subjectTokenType: f.subject_token_type,
    actorToken: f.actor_token,
    actorTokenType: f.actor_token_type,
    requestedTokenType,
    scope: f.scope === undefined ? [] : parseScope(f.scope),
    audience: distinct(f.audience ?? []),
    resource: distinct((f.resource ?? []).map(checkResource)),
    requestedTtlSeconds: f.expires_in === undefined ? undefined : lifetime(f.expires_in),
  };
}

/**
 * RFC 8693 has no parameter for the lifetime a client wants; Hallmark reads `expires_in` (the
 * name of the answer's field), whole seconds. The delegation's max lifetime bounds it (above it:
 * ttl_not_allowed, never a silent cut), the subject token's exp bounds the token anyway.
 */
function lifetime(s: string): number {
  if (!/^[1-9][0-9]{0,8}$/.test(s)) throw invalid("expires_in must be a whole number of seconds, at least 1");
  return Number(s);
}

/** RFC 8707 §2: an absolute URI, without a fragment. */
function checkResource(r: string): string {
  let url: URL;
  try {
    url = new URL(r);
  } catch {
    throw oauthError("oauth_invalid_resource", "resource must be an absolute URI");
  }
  if (url.hash !== "" || r.includes("#")) throw oauthError("oauth_invalid_resource", "resource must not have a fragment");
  return r;
}

const distinct = (xs: string[]): string[] => [...new Set(xs)];
