import { oauthError } from "./errors.js";

/**
 * OAuth scope tokens (RFC 6749 §3.3): `scope-token = 1*NQCHAR`, NQCHAR = %x21 / %x23-5B / %x5D-7E,
 * that is printable ASCII without space, `"` and `\`. A scope is a space-delimited list of them.
 */
export const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

/** Longest scope token Hallmark stores or accepts: scopes are names, not payloads. */
export const MAX_SCOPE_TOKEN_LENGTH = 256;

export function isScopeToken(s: string): boolean {
  return s.length <= MAX_SCOPE_TOKEN_LENGTH && SCOPE_TOKEN.test(s);
}

/**
 * A `scope` parameter or claim ("repo:read issues:write") as its tokens, in order, without
 * repeats. Separators are single spaces (RFC 6749 §3.3); anything else is refused, not repaired.
 */
export function parseScope(value: string): string[] {
  const tokens = value.split(" ");
  const bad = tokens.find((t) => !isScopeToken(t));
  if (bad !== undefined) {
    throw oauthError("oauth_invalid_request", bad === "" ? "the scope has an empty token (separate scope tokens by one space)" : "the scope has a token outside RFC 6749 §3.3 (printable ASCII, no space, quote or backslash)");
  }
  return [...new Set(tokens)];
}
