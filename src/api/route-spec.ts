import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from "fastify";
import type { z } from "zod";
import type { CORE_ERRORS } from "../core-errors.js";
import type { FEDERATION_ERRORS } from "../federation/errors.js";
import type { OAuthErrorCode } from "../oauth/errors.js";
import type { TRANSPARENCY_ERRORS } from "../transparency/errors.js";
import { parseBody } from "./problem.js";

/**
 * One HTTP route described once: the registration reads its validators from here, and the
 * OpenAPI document (src/api/openapi.ts) reads the same schemas, so the two cannot drift.
 */
export interface RouteSpec {
  /** The OpenAPI operationId: unique within its API. */
  operationId: string;
  method: "GET" | "POST" | "DELETE";
  /** Fastify path syntax (`/v1/attest/sessions/:id/evidence`). */
  url: string;
  summary: string;
  description?: string;
  /**
   * Who may call. `node` routes demand the node's X509-SVID over mutual TLS; the registration
   * refuses to wire one without an authenticator, and the document marks it with the mutualTLS
   * security scheme. `admin` routes are reachable only through the admin Unix socket.
   */
  caller: "anyone" | "node" | "admin";
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** How the body travels: JSON (default) or an HTML form (the OAuth endpoints, RFC 6749 §3.2). */
  bodyType?: "json" | "form";
  /** How refusals are written: problem+json (default), or the OAuth error format (RFC 6749 §5.2) with our `code` beside it. */
  errorFormat?: "problem" | "oauth";
  /** Success answers. Their body schemas document the contract; they are never run on a reply. */
  responses: Readonly<Record<number, ResponseSpec>>;
  /** Codes this route refuses with, besides the request-shape codes every route with input can answer. */
  errors?: readonly ErrorCode[];
}

export interface ResponseSpec {
  description: string;
  body?: z.ZodType;
  /** Default `application/json`. */
  contentType?: string;
}

export type ErrorCode = keyof typeof CORE_ERRORS | OAuthErrorCode | keyof typeof FEDERATION_ERRORS | keyof typeof TRANSPARENCY_ERRORS;

/** Keeps the literal type of a spec, so a handler's input and output are typed from its schemas. */
export function defineRoute<const S extends RouteSpec>(spec: S): S {
  return spec;
}

type Parsed<S, K extends string> = S extends { [P in K]: infer T extends z.ZodType } ? z.output<T> : undefined;

export interface RouteInput<S extends RouteSpec> {
  params: Parsed<S, "params">;
  query: Parsed<S, "query">;
  body: Parsed<S, "body">;
}

/** What a handler may return: a documented body (checked by the compiler), or the reply it sent itself. */
export type RouteOutput<S extends RouteSpec> =
  | { [K in keyof S["responses"]]: S["responses"][K] extends { body: infer B extends z.ZodType } ? z.input<B> : never }[keyof S["responses"]]
  | FastifyReply;

export type RouteHandler<S extends RouteSpec, C> = (input: RouteInput<S>, caller: C, req: FastifyRequest, reply: FastifyReply) => Promise<RouteOutput<S>>;

/**
 * Registers `spec` with its handler. The caller is authenticated first (a request without a
 * credential is refused as such before its body is judged), then params, query and body are
 * validated with the spec's zod schemas (invalid_request names the first bad field).
 */
export function registerRoute<S extends RouteSpec, C = undefined>(
  app: FastifyInstance,
  spec: S,
  handler: RouteHandler<S, C>,
  authenticate?: (req: FastifyRequest, reply: FastifyReply) => Promise<C>,
  /** Hooks that run before the body is read (the anonymous rate limit). */
  hooks: Pick<RouteOptions, "onRequest"> = {},
): void {
  if ((spec.caller === "node") !== (authenticate !== undefined)) {
    throw new Error(`route ${spec.operationId}: a node route needs an authenticator, and only a node route takes one`);
  }
  app.route({
    ...hooks,
    method: spec.method,
    url: spec.url,
    handler: async (req, reply) => {
      const caller = (authenticate ? await authenticate(req, reply) : undefined) as C;
      const input = {
        params: spec.params ? parseBody(spec.params, req.params) : undefined,
        query: spec.query ? parseBody(spec.query, req.query) : undefined,
        body: spec.body ? parseBody(spec.body, req.body) : undefined,
      } as RouteInput<S>;
      return handler(input, caller, req, reply);
    },
  });
}
