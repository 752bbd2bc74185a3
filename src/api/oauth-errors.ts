import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { HallmarkError } from "../errors.js";
import { OAUTH_ERROR_OF } from "../oauth/errors.js";
import { FORM_MEDIA_TYPE } from "./form-body.js";
import { failureLogger, problemFor, toHallmarkError } from "./problem.js";

/** RFC 6749 §5.2 error answer, with our stable code beside the OAuth one. */
export interface OAuthErrorBody {
  error: string;
  error_description: string;
  code: string;
}

/** Core codes that can reach an OAuth endpoint, as OAuth error values. */
const CORE_OAUTH_ERROR: Readonly<Record<string, string>> = {
  invalid_request: "invalid_request",
  body_too_large: "invalid_request",
  unsupported_media_type: "invalid_request",
  // RFC 6749 names no error for 429; this one says what it is (the server will not serve this
  // caller for now: see Retry-After), and `code` says rate_limited.
  rate_limited: "temporarily_unavailable",
};

export function oauthErrorFor(error: unknown): { status: number; body: OAuthErrorBody } {
  let he = toHallmarkError(error);
  if (he.code === "unsupported_media_type") he = new HallmarkError("unsupported_media_type", `send ${FORM_MEDIA_TYPE}`);
  const problem = problemFor(he);
  const oauth = (OAUTH_ERROR_OF as Record<string, string>)[he.code] ?? CORE_OAUTH_ERROR[he.code];
  const fallback = problem.status === 503 ? "temporarily_unavailable" : problem.status >= 500 ? "server_error" : "invalid_request";
  return { status: problem.status, body: { error: oauth ?? fallback, error_description: problem.detail, code: he.code } };
}

/**
 * Answers every refusal of the plugin's routes in the OAuth error format, never cached; 401
 * (invalid_client) carries WWW-Authenticate (RFC 6749 §5.2). Logs as the problem+json handler
 * does: the code for refusals, the cause for failures; never a body (tokens travel in them).
 */
export function registerOAuthErrorHandler(app: FastifyInstance, log: Logger): void {
  const logFailure = failureLogger(log);
  app.setErrorHandler((error, request, reply) => {
    const { status, body } = oauthErrorFor(error);
    if (status >= 500) logFailure(error, { ...problemFor(error, request.id) }, request.id);
    else log.info({ code: body.code, reqId: request.id, url: request.url }, "request refused");
    if (status === 401) void reply.header("www-authenticate", `Bearer realm="hallmark", error="${body.error}"`);
    return reply.code(status).header("cache-control", "no-store").header("pragma", "no-cache").type("application/json; charset=utf-8").send(body);
  });
}
