import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { errorSpec } from "../error-codes.js";
import type { Problem } from "./problem.js";
import { type RouteSpec, registerRoute } from "./route-spec.js";

/**
 * OpenAPI 3.1 documents generated from the route specs (src/api/route-spec.ts): the same zod
 * schemas that validate requests, converted by zod's own JSON Schema (draft 2020-12) output,
 * which is OpenAPI 3.1's schema dialect. Nothing is declared twice.
 */
export interface ApiDescription {
  title: string;
  description: string;
  routes: readonly RouteSpec[];
}

export const JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema";
const API_VERSION = "1";
const NODE_SVID_SCHEME = "nodeSvid";
const PROBLEM_REF = { $ref: "#/components/schemas/Problem" };
const OAUTH_ERROR_REF = { $ref: "#/components/schemas/OAuthError" };

/** The OAuth error format of the /oauth2 endpoints (RFC 6749 §5.2), with Hallmark's code beside it (src/api/oauth-errors.ts). */
export const oauthErrorSchema = z.object({
  error: z.string().describe("the OAuth error code (invalid_request, invalid_client, invalid_grant…)"),
  error_description: z.string().describe("what was wrong; for a status >= 500, a generic text"),
  code: z.string().describe("stable Hallmark error code; the table is src/error-codes.ts"),
});

/** RFC 9457 problem details as Hallmark sends them (src/api/problem.ts). */
export const problemSchema = z.object({
  type: z.string().describe("urn:hallmark:error:<code>"),
  title: z.string().describe("the code's stable title"),
  status: z.number().int().min(400).max(599),
  detail: z.string().describe("what was wrong; for a status >= 500, the title again (the cause goes to the log only)"),
  code: z.string().describe("stable error code; the table is src/error-codes.ts"),
  instance: z.string().optional().describe("urn:hallmark:request:<request id>, as in the server log"),
});
// The schema and the interface describe the same object: this line stops compiling if they drift.
const _problemSchemaIsProblem: [z.infer<typeof problemSchema>, Problem] extends [Problem, z.infer<typeof problemSchema>] ? true : never = true;
void _problemSchemaIsProblem;

/**
 * A zod schema as a JSON Schema object for the document (the dialect is declared once, at the
 * top). Always the input side: for a request, what the server accepts; for an answer, objects
 * stay open (no additionalProperties: false), as clients must accept members added later.
 */
export function jsonSchemaOf(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { target: "draft-2020-12", io: "input", unrepresentable: "throw" });
  return rest;
}

/** `/v1/attest/sessions/:id/evidence` -> `/v1/attest/sessions/{id}/evidence` */
export function openApiPath(fastifyUrl: string): string {
  return fastifyUrl.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
}

export function openApiDocument(api: ApiDescription): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of api.routes) {
    const item = (paths[openApiPath(route.url)] ??= {});
    const method = route.method.toLowerCase();
    if (item[method]) throw new Error(`two routes for ${route.method} ${route.url}`);
    item[method] = operation(route);
  }
  const nodeRoutes = api.routes.some((r) => r.caller === "node");
  const oauthRoutes = api.routes.some((r) => r.errorFormat === "oauth");
  return {
    openapi: "3.1.0",
    info: { title: api.title, version: API_VERSION, description: api.description },
    jsonSchemaDialect: JSON_SCHEMA_DIALECT,
    paths,
    components: {
      schemas: { Problem: jsonSchemaOf(problemSchema), ...(oauthRoutes ? { OAuthError: jsonSchemaOf(oauthErrorSchema) } : {}) },
      ...(nodeRoutes
        ? {
            securitySchemes: {
              [NODE_SVID_SCHEME]: {
                type: "mutualTLS",
                description: "The node's X509-SVID (issued by attestation) as the TLS client certificate, chaining to the trust bundle.",
              },
            },
          }
        : {}),
    },
  };
}

function operation(route: RouteSpec): Record<string, unknown> {
  const parameters = [...parametersOf(route.params, "path"), ...parametersOf(route.query, "query")];
  const responses: Record<string, unknown> = {};
  for (const [status, r] of Object.entries(route.responses)) {
    responses[status] = {
      description: r.description,
      ...(r.body ? { content: { [r.contentType ?? "application/json"]: { schema: jsonSchemaOf(r.body) } } } : {}),
    };
  }
  const refusal = route.errorFormat === "oauth" ? { "application/json": { schema: OAUTH_ERROR_REF } } : { "application/problem+json": { schema: PROBLEM_REF } };
  for (const [status, codes] of refusalsByStatus(route)) {
    if (responses[status]) throw new Error(`${route.operationId}: status ${status} is both an answer and a refusal`);
    responses[status] = {
      description: `Refused: ${codes.map((c) => `\`${c}\``).join(", ")}`,
      "x-hallmark-error-codes": codes,
      content: refusal,
    };
  }
  responses.default = {
    description: "Any other failure (`internal`, `unavailable`, `hsm_unavailable`, `ca_not_ready`…); a 5xx never details its cause",
    content: refusal,
  };
  return {
    operationId: route.operationId,
    summary: route.summary,
    ...(route.description ? { description: route.description } : {}),
    ...(route.caller === "node" ? { security: [{ [NODE_SVID_SCHEME]: [] }] } : {}),
    ...(parameters.length ? { parameters } : {}),
    ...(route.body ? { requestBody: { required: true, content: { [bodyMediaType(route)]: { schema: jsonSchemaOf(route.body) } } } } : {}),
    responses,
  };
}

function bodyMediaType(route: RouteSpec): string {
  return route.bodyType === "form" ? "application/x-www-form-urlencoded" : "application/json";
}

function parametersOf(schema: z.ZodObject | undefined, where: "path" | "query"): Array<Record<string, unknown>> {
  if (!schema) return [];
  const object = jsonSchemaOf(schema) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
  return Object.entries(object.properties ?? {}).map(([name, s]) => ({
    name,
    in: where,
    required: where === "path" || (object.required ?? []).includes(name),
    schema: s,
  }));
}

/** The route's refusal codes, grouped by the HTTP status the error table gives each. */
function refusalsByStatus(route: RouteSpec): Map<string, string[]> {
  const shape = [
    ...(route.params || route.query || route.body ? ["invalid_request"] : []),
    ...(route.body ? ["body_too_large", "unsupported_media_type"] : []),
  ];
  const byStatus = new Map<string, string[]>();
  for (const code of new Set([...shape, ...(route.errors ?? [])])) {
    const status = String(errorSpec(code).status);
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  return byStatus;
}

/**
 * Serves the document of `api` at `spec`'s path. It is built on the first request (startup pays
 * nothing) and kept as a string: it describes code, which does not change while the process runs.
 */
export function serveOpenApi(app: FastifyInstance, spec: RouteSpec, api: ApiDescription): void {
  const routes = api.routes.includes(spec) ? api.routes : [...api.routes, spec];
  let json: string | undefined;
  registerRoute(app, spec, async (_in, _caller, _req, reply) =>
    reply.type("application/json; charset=utf-8").send((json ??= JSON.stringify(openApiDocument({ ...api, routes })))),
  );
}
