import { oauthError } from "./errors.js";

/**
 * OAuth scope tokens (RFC 6749 §3.3): `scope-token = 1*NQCHAR`, NQCHAR = %x21 / %x23-5B / %x5D-7E,
 * that is printable ASCII without space, `"` and `\`. A scope is a space-delimited list of them.
 */
export const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

/** Longest scope token Hallmark stores or accepts: scopes are names, not payloads. */
export const MAX_SCOPE_TOKEN_LENGTH = 256;
/** Most scope tokens one request may ask for (a delegation holds at most as many). */
export const MAX_REQUESTED_SCOPE_TOKENS = 64;
/** Most scope tokens read from a subject token's claim (IdPs put many in). */
export const MAX_CLAIMED_SCOPE_TOKENS = 256;

export function isScopeToken(s: string): boolean {
  return s.length <= MAX_SCOPE_TOKEN_LENGTH && SCOPE_TOKEN.test(s);
}

/**
 * A `scope` parameter or claim ("repo:read issues:write") as its tokens, in order, without
 * repeats. Separators are single spaces (RFC 6749 §3.3); anything else is refused, not repaired.
 */
export function parseScope(value: string): string[] {
  const tokens = value.split(" ");
  if (tokens.length > MAX_REQUESTED_SCOPE_TOKENS) throw oauthError("oauth_invalid_request", `at most ${MAX_REQUESTED_SCOPE_TOKENS} scope tokens`);
  const bad = tokens.find((t) => !isScopeToken(t));
  if (bad !== undefined) {
    throw oauthError("oauth_invalid_request", bad === "" ? "the scope has an empty token (separate scope tokens by one space)" : "the scope has a token outside RFC 6749 §3.3 (printable ASCII, no space, quote or backslash)");
  }
  return [...new Set(tokens)];
}

/**
 * A token's `scope` claim (RFC 8693 §4.2, RFC 9068: space-separated) or, failing that, `scp` (an
 * array, or a space-separated string). Read leniently as IdPs write it (runs of spaces), but every
 * token must still be an RFC 6749 scope token. undefined when the token has neither claim; a
 * string naming what is wrong when the claim is malformed (the caller refuses with its own code).
 */
export function scopeClaim(claims: Record<string, unknown>): { scope: string[] | undefined } | { invalid: string } {
  const raw = claims.scope !== undefined ? claims.scope : claims.scp;
  if (raw === undefined) return { scope: undefined };
  const list: unknown = typeof raw === "string" ? raw.split(" ").filter((s) => s !== "") : raw;
  if (!Array.isArray(list) || list.length > MAX_CLAIMED_SCOPE_TOKENS || !list.every((s) => typeof s === "string" && isScopeToken(s))) {
    return { invalid: `has a scope that is not up to ${MAX_CLAIMED_SCOPE_TOKENS} RFC 6749 scope tokens` };
  }
  return { scope: [...new Set(list as string[])] };
}
