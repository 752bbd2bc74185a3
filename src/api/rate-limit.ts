import type { FastifyReply, FastifyRequest, onRequestHookHandler } from "fastify";
import { HallmarkError } from "../errors.js";
import type { AnonymousRateLimit } from "../service/rate-limit.js";
import { addressKey } from "./address-key.js";
import { problemFor, sendProblem } from "./problem.js";

/**
 * An onRequest hook for anonymous routes: past the caller's per-address allowance it answers 429
 * problem+json (`rate_limited`) with Retry-After, before the body is read or anything is stored.
 * The refusal is counted by the limiter (metric and audit summary), not audited one by one.
 */
export function rateLimitHook(limit: AnonymousRateLimit): onRequestHookHandler {
  return (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
    const r = limit.admit(addressKey(request.ip), request.routeOptions.url ?? request.url.split("?")[0] ?? "");
    if (r.ok) {
      done();
      return;
    }
    const problem = problemFor(new HallmarkError("rate_limited", `too many requests from this address; retry in ${r.retryAfterSeconds} s`), request.id);
    void sendProblem(reply.header("retry-after", String(r.retryAfterSeconds)), problem);
  };
}
