import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from "fastify";
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
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

/** Maps Fastify's and Node's own errors (body limit, bad JSON, bad URL, header overflow) onto our codes. */
export function toHallmarkError(error: unknown): HallmarkError {
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
    case "FST_ERR_BAD_URL":
      return new HallmarkError("invalid_request", "the request path is not valid percent-encoding");
    // Node's HTTP parser, before Fastify sees a request (the 'clientError' event)
    case "HPE_HEADER_OVERFLOW":
      return new HallmarkError("headers_too_large", "the request headers are too large");
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return new HallmarkError("request_timeout", "the request did not arrive in time");
    default:
      break;
  }
  if (typeof fe.code === "string" && fe.code.startsWith("HPE_")) {
    return new HallmarkError("invalid_request", "the HTTP request is malformed");
  }
  if (error instanceof SyntaxError || fe.statusCode === 400) {
    return new HallmarkError("invalid_request", "the request body is not valid JSON");
  }
  return new HallmarkError("internal", "internal error", { cause: error });
}

export function sendProblem(reply: FastifyReply, problem: Problem): FastifyReply {
  return reply.code(problem.status).type("application/problem+json").send(problem);
}

/** At most one log line per code in this window; the next line says how many were left out. */
const LOG_WINDOW_MS = 10_000;

/**
 * Logs server-side failures without letting a storm of them flood the log: per code, one line per
 * window, carrying the count suppressed since the previous line. A 503 is a state (disk full, HSM
 * gone), not a bug, so it is logged without a stack; a 500 keeps its cause in full.
 */
export function failureLogger(log: Logger, windowMs = LOG_WINDOW_MS): (error: unknown, problem: Problem, reqId?: string) => void {
  const windows = new Map<string, { until: number; suppressed: number }>();
  return (error, problem, reqId) => {
    const now = Date.now();
    const w = windows.get(problem.code);
    if (w && now < w.until) {
      w.suppressed += 1;
      return;
    }
    windows.set(problem.code, { until: now + windowMs, suppressed: 0 });
    const suppressed = w?.suppressed ?? 0;
    if (problem.status === 503) {
      const he = isHallmarkError(error) ? error : undefined;
      const cause = he?.cause as { code?: unknown; message?: unknown } | undefined;
      log.error(
        { code: problem.code, reqId, internal: he?.internal, cause: cause ? `${String(cause.code ?? "")} ${String(cause.message ?? "")}`.trim() : undefined, suppressed },
        "request failed: service unavailable",
      );
    } else {
      log.error({ err: error, code: problem.code, reqId, suppressed }, "request failed");
    }
  };
}

/**
 * The raw HTTP/1.1 answer for errors met before Fastify has a request and reply: the HTTP
 * parser's (malformed request, header overflow, timeout) and CONNECT. Always closes.
 */
function rawProblemResponse(problem: Problem, headers: Record<string, string> = {}): string {
  const body = JSON.stringify(problem);
  const head = [
    `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? "Error"}`,
    "Content-Type: application/problem+json",
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    "Connection: close",
  ];
  return `${head.join("\r\n")}\r\n\r\n${body}`;
}

/** Sends the raw answer and closes; a peer that never reads is cut off after a short grace. */
function answerAndClose(socket: Duplex, response: string): void {
  if (socket.writable) socket.end(response);
  socket.resume(); // discard the rest of what the peer sends, so closing does not reset the answer away
  setTimeout(() => socket.destroy(), 2000).unref();
}

/** Sockets already answered: the parser may report several errors for one connection. */
const answered = new WeakSet<Duplex>();

/**
 * Options every Hallmark Fastify app is built with, so that errors raised before routing (a path
 * that is not valid percent-encoding; what Node's HTTP parser refuses) are problem+json too.
 */
export function problemServerOptions(log: Logger): Pick<FastifyServerOptions, "frameworkErrors" | "clientErrorHandler"> {
  return {
    frameworkErrors: (error, request, reply) => {
      const problem = problemFor(error, request.id);
      log.info({ code: problem.code, reqId: request.id }, "request refused");
      void sendProblem(reply, problem);
    },
    clientErrorHandler: (error: Error & { code?: string }, socket) => {
      // A reset or a closed socket has no one left to answer.
      if (error.code === "ECONNRESET" || socket.destroyed || answered.has(socket)) return;
      answered.add(socket);
      const problem = problemFor(toHallmarkError(error));
      if (problem.code === "internal") {
        // Not a parser finding or a deadline we set: a connection-level failure (seen once under
        // heavy load, code unknown). The client caused it and no request was read, so there is
        // nothing to answer for, and a 500 would blame the server: close the connection, say why.
        log.warn({ clientError: error.code ?? error.name, message: error.message }, "closed a connection on an unexpected client error");
        socket.destroy();
        return;
      }
      log.info({ code: problem.code, parserError: error.code }, "request refused by the HTTP parser");
      // If a response is already on its way on this connection, a second one would corrupt it.
      const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
      if (inFlight) socket.destroy();
      else answerAndClose(socket, rawProblemResponse(problem));
    },
  };
}

export function registerProblemHandlers(app: FastifyInstance, log: Logger): void {
  const logFailure = failureLogger(log);
  app.setErrorHandler((error, request: FastifyRequest, reply) => {
    const problem = problemFor(error, request.id);
    if (problem.status >= 500) {
      logFailure(error, problem, request.id);
    } else {
      log.info({ code: problem.code, reqId: request.id, url: request.url }, "request refused");
    }
    return sendProblem(reply, problem);
  });

  // Every method any route answers to, so a miss can tell "no such path" from "not this method".
  const methods = new Set<string>();
  app.addHook("onRoute", (route) => {
    for (const m of [route.method].flat()) methods.add(m.toUpperCase());
  });
  /** The methods this path answers to (RFC 9110 §10.2.1 Allow); empty when no route matches it. */
  const allowedMethods = (url: string): string[] => {
    const path = url.split("?")[0] ?? "";
    if (!path.startsWith("/")) return [];
    return [...methods].filter((method) => app.findRoute({ method: method as "GET", url: path }) !== null).sort();
  };

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split("?")[0];
    const allow = allowedMethods(request.url);
    if (allow.length > 0) {
      void reply.header("allow", allow.join(", "));
      return sendProblem(reply, problemFor(new HallmarkError("method_not_allowed", `${path} answers ${allow.join(", ")}, not ${request.method}`), request.id));
    }
    return sendProblem(reply, problemFor(new HallmarkError("not_found", `no route ${request.method} ${path}`), request.id));
  });

  // An Expect other than 100-continue: Node answers a bare 417 unless someone listens.
  app.server.on("checkExpectation", (_req: IncomingMessage, res: ServerResponse) => {
    const problem = problemFor(new HallmarkError("expectation_failed", "only Expect: 100-continue is understood"));
    log.info({ code: problem.code }, "request refused");
    const body = JSON.stringify(problem);
    res
      .writeHead(problem.status, { "content-type": "application/problem+json", "content-length": Buffer.byteLength(body), connection: "close" })
      .end(body);
  });

  // Node hands CONNECT to a 'connect' listener and, with none, drops the connection unanswered.
  // No Hallmark resource answers CONNECT: say so, as problem+json, and close.
  app.server.on("connect", (req: IncomingMessage, socket: Duplex) => {
    if (answered.has(socket)) return;
    answered.add(socket);
    const allow = allowedMethods(req.url ?? "");
    const problem = problemFor(new HallmarkError("method_not_allowed", "CONNECT is not served here"));
    log.info({ code: problem.code, method: "CONNECT" }, "request refused");
    answerAndClose(socket, rawProblemResponse(problem, { Allow: allow.join(", ") }));
  });
}

/** Validates an untrusted body with zod; the first bad field is named in the error. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue && issue.path.length ? `${issue.path.join(".")}: ` : "";
  throw new HallmarkError("invalid_request", `${where}${issue?.message ?? "invalid body"}`);
}
