import type { FastifyReply, FastifyRequest, onRequestHookHandler } from "fastify";
import { HallmarkError } from "../errors.js";
import type { RateLimit } from "../service/rate-limit.js";
import type { TakeResult } from "../service/token-buckets.js";
import { addressKey } from "./address-key.js";
import { problemFor, sendProblem } from "./problem.js";

const routeOf = (request: FastifyRequest): string => request.routeOptions.url ?? request.url.split("?")[0] ?? "";

/** A refusal by a limit: 429 `rate_limited`, with Retry-After set on the reply that will carry it. */
function refusal(r: TakeResult & { ok: false }, reply: FastifyReply, why: string): HallmarkError {
  reply.header("retry-after", String(r.retryAfterSeconds));
  return new HallmarkError("rate_limited", `${why}; retry in ${r.retryAfterSeconds} s`);
}

/**
 * Takes one request from the caller's per-address allowance (limits.attestRate); past it, throws
 * 429 `rate_limited` with Retry-After. The refusal is counted by the limiter (metric and audit
 * summary), not audited one by one.
 */
export function admitAnonymous(limit: RateLimit | undefined, request: FastifyRequest, reply: FastifyReply): void {
  const r = limit?.admit(addressKey(request.ip), routeOf(request));
  if (r && !r.ok) throw refusal(r, reply, "too many requests from this address");
}

/**
 * admitAnonymous as an onRequest hook for anonymous routes: it answers problem+json before the
 * body is read or anything is stored.
 */
export function rateLimitHook(limit: RateLimit): onRequestHookHandler {
  return (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
    try {
      admitAnonymous(limit, request, reply);
      done();
    } catch (e) {
      void sendProblem(reply, problemFor(e, request.id));
    }
  };
}

/**
 * The per-node issuance limit, for a node authenticated by this request: a request asking for
 * `svids` SVIDs takes that many tokens or is refused whole, with 429 `rate_limited` and
 * Retry-After, before anything is judged or signed. Like the anonymous limit, refusals are counted
 * and summarised, not audited one by one: a workload asking its agent for JWT-SVIDs for ever new
 * audiences cannot make the server sign, and the audit and transparency logs grow, at its pace.
 */
export function admitIssuance(limit: RateLimit | undefined, nodeId: string, svids: number, request: FastifyRequest, reply: FastifyReply): void {
  const r = limit?.admit(nodeId, routeOf(request), svids);
  if (r && !r.ok) throw refusal(r, reply, "this node asked for more SVIDs than its allowance (limits.issuanceRate)");
}

/**
 * The per-client limit of the token service (limits.clientRate), for an OAuth client that has
 * just authenticated: every token exchange, introspection and revocation takes one, refused or
 * not, since each writes an audit record. Past it, 429 `rate_limited` with Retry-After, before
 * anything else is checked or written, counted into the client's summary.
 */
export function admitClient(limit: RateLimit | undefined, clientId: string, request: FastifyRequest, reply: FastifyReply): void {
  const r = limit?.admit(clientId, routeOf(request));
  if (r && !r.ok) throw refusal(r, reply, "this client sent more requests than its allowance (limits.clientRate)");
}
