import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Logger } from "pino";
import { z } from "zod";
import { errorSpec } from "../error-codes.js";
import { HallmarkError, isHallmarkError } from "../errors.js";

/**
 * RFC 9457 problem details. Every error answer is application/problem+json with a stable
 * `code`. Status < 500: the detail is the error's public message. Status >= 500: a generic
 * detail goes out and the cause is logged in full (never the other way round).
 */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  instance?: string;
}

export function problemFor(error: unknown, requestId?: string): Problem {
  const he = toHallmarkError(error);
  const spec = errorSpec(he.code);
  const exposed = spec.status < 500;
  return {
    type: `urn:hallmark:error:${he.code}`,
    title: spec.title,
    status: spec.status,
    detail: exposed ? he.message : spec.title,
    code: he.code,
    ...(requestId ? { instance: `urn:hallmark:request:${requestId}` } : {}),
  };
}

/** Maps Fastify's own errors (body limit, bad JSON, wrong content type) onto our codes. */
function toHallmarkError(error: unknown): HallmarkError {
  if (isHallmarkError(error)) return error;
  const fe = error as Partial<FastifyError>;
  switch (fe.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new HallmarkError("body_too_large", "the request body is too large");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new HallmarkError("unsupported_media_type", "send application/json");
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return new HallmarkError("invalid_request", "the request body is empty or its length is wrong");
    default:
      break;
  }
  if (error instanceof SyntaxError || fe.statusCode === 400) {
    return new HallmarkError("invalid_request", "the request body is not valid JSON");
  }
  return new HallmarkError("internal", "internal error", { cause: error });
}

export function sendProblem(reply: FastifyReply, problem: Problem): FastifyReply {
  return reply.code(problem.status).type("application/problem+json").send(problem);
}

export function registerProblemHandlers(app: FastifyInstance, log: Logger): void {
  app.setErrorHandler((error, request: FastifyRequest, reply) => {
    const problem = problemFor(error, request.id);
    if (problem.status >= 500) {
      log.error({ err: error, code: problem.code, reqId: request.id }, "request failed");
    } else {
      log.info({ code: problem.code, reqId: request.id, url: request.url }, "request refused");
    }
    return sendProblem(reply, problem);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, problemFor(new HallmarkError("not_found", `no route ${request.method} ${request.url.split("?")[0]}`), request.id)),
  );
}

/** Validates an untrusted body with zod; the first bad field is named in the error. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue && issue.path.length ? `${issue.path.join(".")}: ` : "";
  throw new HallmarkError("invalid_request", `${where}${issue?.message ?? "invalid body"}`);
}
