import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FastifyInstance } from "fastify";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { z } from "zod";
import { ADMIN_ROUTES } from "../../src/api/admin-routes.js";
import { buildAdminApp, buildPublicApp } from "../../src/api/app.js";
import { JSON_SCHEMA_DIALECT, openApiPath } from "../../src/api/openapi.js";
import { PUBLIC_ROUTES } from "../../src/api/public-routes.js";
import type { RouteSpec } from "../../src/api/route-spec.js";
import { WELL_KNOWN_ROUTES } from "../../src/api/well-known-routes.js";
import { newClientKey } from "../../src/client/csr.js";
import { adminRequest } from "../../src/client/http.js";
import { ERROR_CODES } from "../../src/error-codes.js";
import { createLogger } from "../../src/log.js";
import { httpsRaw, postJson } from "../helpers/https.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

// Ajv 8 (JSON Schema 2020-12) ships with fastify, so checking schemas needs no new dependency.
// It is reached through fastify's validator compiler: the top-level `ajv` is eslint's v6.
interface Validate {
  (data: unknown): boolean;
  errors?: unknown;
}
interface Ajv {
  validateSchema(schema: object): boolean;
  compile(schema: object): Validate;
  addFormat(name: string, format: RegExp): Ajv;
  errors?: unknown;
}
const fromFastify = createRequire(createRequire(import.meta.url).resolve("@fastify/ajv-compiler"));
const Ajv2020 = (fromFastify("ajv/dist/2020") as { default: new (opts: object) => Ajv }).default;
const addFormats = (fromFastify("ajv-formats") as { default: (ajv: Ajv) => void }).default;
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
// zod's z.base64() says format "base64" (with a pattern that does the real check); not an ajv-formats name.
ajv.addFormat("base64", /^[0-9a-zA-Z+/]*={0,2}$/);

type Json = Record<string, unknown>;
type Doc = Json & { paths: Record<string, Record<string, Json>>; components: Json };

// Registration never touches the services: any use of one would throw here.
const service = (name: string) =>
  new Proxy({}, {
    get: (_t, k) => {
      throw new Error(`deps.${name}.${String(k)} used while only registering routes`);
    },
  });
const never = (name: string) => () => {
  throw new Error(`deps.${name}() used while only registering routes`);
};
const unusedDeps = {
  attestation: service("attestation"),
  nodes: service("nodes"),
  ca: service("ca"),
  metrics: service("metrics"),
  admin: service("admin"),
  ready: never("ready"),
  issuerUrl: never("issuerUrl"),
} as never;

const log = createLogger("silent");
let publicApp: FastifyInstance;
let adminApp: FastifyInstance;
let publicDoc: Doc;
let adminDoc: Doc;

beforeAll(async () => {
  publicApp = await buildPublicApp({ log, bodyLimit: 64 * 1024 }, unusedDeps);
  adminApp = await buildAdminApp({ log }, unusedDeps);
  await Promise.all([publicApp.ready(), adminApp.ready()]);
  publicDoc = await docOf(publicApp, "/openapi.json");
  adminDoc = await docOf(adminApp, "/admin/openapi.json");
});
afterAll(async () => {
  await Promise.all([publicApp?.close(), adminApp?.close()]);
});

async function docOf(app: FastifyInstance, url: string): Promise<Doc> {
  const r = await app.inject({ method: "GET", url });
  expect(r.statusCode).toBe(200);
  expect(r.headers["content-type"]).toContain("application/json");
  return JSON.parse(r.body) as Doc;
}

/** "METHOD /path/{param}" for every route Fastify serves, read from its route tree. */
function servedRoutes(app: FastifyInstance): Set<string> {
  const all = new Set<string>();
  const prefixes: string[] = [];
  const unread: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split("\n")) {
    if (!line.trim()) continue;
    const m = /^((?:│ {3}| {4})*)(?:├── |└── )(\S+)(?: \(([^)]+)\))?$/.exec(line);
    if (!m) {
      unread.push(line);
      continue;
    }
    const depth = m[1]!.length / 4;
    prefixes.length = depth;
    const path = (prefixes[depth - 1] ?? "") + m[2]!;
    prefixes[depth] = path;
    for (const method of (m[3] ?? "").split(", ").filter(Boolean)) all.add(`${method} ${openApiPath(path)}`);
  }
  expect(unread, "printRoutes lines this test cannot read").toEqual([]);
  // HEAD is Fastify's automatic twin of each GET, not a route of its own.
  return new Set([...all].filter((r) => !(r.startsWith("HEAD ") && all.has(`GET ${r.slice(5)}`))));
}

const HTTP_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/**
 * find-my-way's printRoutes (commonPrefix: false) prints a wildcard route as a bare `*`, without
 * its static prefix (`/log/tile/*` shows as `*`): documented wildcard routes are compared so.
 */
const printedAs = (path: string) => (path.endsWith("/*") ? "*" : path);

function documentedRoutes(doc: Doc): Set<string> {
  const out = new Set<string>();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item)) out.add(`${method.toUpperCase()} ${printedAs(path)}`);
  }
  return out;
}

function operations(doc: Doc): Array<{ path: string; method: string; op: Json }> {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([m]) => HTTP_METHODS.includes(m))
      .map(([method, op]) => ({ path, method, op })),
  );
}

function resolveRef(doc: Doc, ref: string): unknown {
  expect(ref.startsWith("#/"), `only local refs: ${ref}`).toBe(true);
  let at: unknown = doc;
  for (const part of ref.slice(2).split("/").map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"))) {
    at = at !== null && typeof at === "object" ? (at as Json)[part] : undefined;
  }
  return at;
}

/** A schema with its document-level $refs inlined, so Ajv can compile it on its own. */
function inlineRefs(doc: Doc, node: unknown): unknown {
  if (Array.isArray(node)) return node.map((n) => inlineRefs(doc, n));
  if (node === null || typeof node !== "object") return node;
  const ref = (node as Json).$ref;
  if (typeof ref === "string") return inlineRefs(doc, resolveRef(doc, ref));
  return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, inlineRefs(doc, v)]));
}

function allRefs(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) node.forEach((n) => allRefs(n, out));
  else if (node !== null && typeof node === "object") {
    for (const [k, v] of Object.entries(node)) {
      if (k === "$ref" && typeof v === "string") out.push(v);
      else allRefs(v, out);
    }
  }
  return out;
}

/** Every schema in the document, with where it is. */
function schemasOf(doc: Doc): Array<{ where: string; schema: Json }> {
  const out: Array<{ where: string; schema: Json }> = [];
  for (const [name, schema] of Object.entries((doc.components.schemas ?? {}) as Record<string, Json>)) {
    out.push({ where: `components.schemas.${name}`, schema });
  }
  for (const { path, method, op } of operations(doc)) {
    const at = `${method.toUpperCase()} ${path}`;
    for (const p of (op.parameters ?? []) as Json[]) out.push({ where: `${at} parameter ${String(p.name)}`, schema: p.schema as Json });
    const body = op.requestBody as { content: Record<string, { schema: Json }> } | undefined;
    for (const [type, media] of Object.entries(body?.content ?? {})) out.push({ where: `${at} request ${type}`, schema: media.schema });
    for (const [status, r] of Object.entries(op.responses as Record<string, { content?: Record<string, { schema: Json }> }>)) {
      for (const [type, media] of Object.entries(r.content ?? {})) out.push({ where: `${at} ${status} ${type}`, schema: media.schema });
    }
  }
  return out;
}

/** What can be checked of OpenAPI 3.1 without an OpenAPI validator package. */
function expectValidOpenApi31(doc: Doc): void {
  expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
  expect(doc.jsonSchemaDialect).toBe(JSON_SCHEMA_DIALECT);
  const info = doc.info as Json;
  expect(typeof info.title).toBe("string");
  expect(typeof info.version).toBe("string");
  expect(Object.keys(doc.paths).length).toBeGreaterThan(0);

  const schemes = (doc.components.securitySchemes ?? {}) as Record<string, Json>;
  for (const scheme of Object.values(schemes)) {
    expect(["apiKey", "http", "mutualTLS", "oauth2", "openIdConnect"]).toContain(scheme.type);
  }
  const operationIds = new Set<string>();
  for (const [path, item] of Object.entries(doc.paths)) {
    expect(path.startsWith("/"), path).toBe(true);
    for (const key of Object.keys(item)) expect(HTTP_METHODS, `${path}: ${key}`).toContain(key);
  }
  for (const { path, method, op } of operations(doc)) {
    const at = `${method.toUpperCase()} ${path}`;
    expect(typeof op.operationId, at).toBe("string");
    expect(operationIds.has(op.operationId as string), `operationId ${String(op.operationId)} repeats`).toBe(false);
    operationIds.add(op.operationId as string);
    const params = (op.parameters ?? []) as Json[];
    for (const p of params) {
      expect(["path", "query", "header", "cookie"], at).toContain(p.in);
      expect(typeof p.name, at).toBe("string");
      if (p.in === "path") expect(p.required, `${at}: path parameter ${String(p.name)}`).toBe(true);
    }
    // Each {template} of the path has its path parameter, and nothing else does.
    const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
    expect(params.filter((p) => p.in === "path").map((p) => p.name).sort(), at).toEqual(templated);
    const responses = op.responses as Record<string, Json>;
    expect(Object.keys(responses).length, at).toBeGreaterThan(0);
    for (const [status, r] of Object.entries(responses)) {
      expect(status, at).toMatch(/^(default|[1-5](\d\d|XX))$/);
      expect(typeof r.description, `${at} ${status}`).toBe("string");
    }
    for (const requirement of (op.security ?? []) as Json[]) {
      for (const name of Object.keys(requirement)) expect(Object.keys(schemes), `${at} security`).toContain(name);
    }
  }
  for (const ref of allRefs(doc)) expect(resolveRef(doc, ref), `$ref ${ref}`).toBeDefined();
  for (const { where, schema } of schemasOf(doc)) {
    expect(schema !== null && typeof schema === "object", where).toBe(true);
    const inlined = inlineRefs(doc, schema) as Json;
    expect(ajv.validateSchema({ $schema: JSON_SCHEMA_DIALECT, ...inlined }), `${where}: ${JSON.stringify(ajv.errors)}`).toBe(true);
    expect(() => ajv.compile(inlined), where).not.toThrow();
  }
}

const operationOf = (doc: Doc, method: string, path: string) => {
  const op = doc.paths[path]?.[method.toLowerCase()];
  expect(op, `${method} ${path} in the document`).toBeDefined();
  return op!;
};

/** The document's schema of one media type, compiled. */
function validatorOf(doc: Doc, method: string, path: string, status: string | "request", type = "application/json"): Validate {
  const op = operationOf(doc, method, path);
  const holder = status === "request" ? (op.requestBody as Json) : (op.responses as Record<string, Json>)[status];
  const schema = (holder?.content as Record<string, { schema: Json }> | undefined)?.[type]?.schema;
  expect(schema, `${method} ${path} ${status} ${type}`).toBeDefined();
  return ajv.compile(inlineRefs(doc, schema) as Json);
}

function expectValid(validate: Validate, data: unknown, what: string): void {
  expect(validate(data), `${what}: ${JSON.stringify(validate.errors)} for ${JSON.stringify(data)}`).toBe(true);
}

const ALL_SPECS: RouteSpec[] = [...Object.values(PUBLIC_ROUTES), ...Object.values(WELL_KNOWN_ROUTES), ...Object.values(ADMIN_ROUTES)];

describe("route coverage", () => {
  it("documents every route the public listener serves, with its method, and nothing else", () => {
    const served = servedRoutes(publicApp);
    expect(served.size).toBeGreaterThan(10);
    expect([...documentedRoutes(publicDoc)].sort()).toEqual([...served].sort());
  });

  it("documents every route the admin socket serves, with its method, and nothing else", () => {
    const served = servedRoutes(adminApp);
    expect(served.size).toBeGreaterThan(10);
    expect([...documentedRoutes(adminDoc)].sort()).toEqual([...served].sort());
  });

  it("marks exactly the node routes with the mutualTLS scheme", () => {
    expect(publicDoc.components.securitySchemes).toEqual({ nodeSvid: expect.objectContaining({ type: "mutualTLS" }) });
    const secured = operations(publicDoc)
      .filter(({ op }) => JSON.stringify(op.security) === JSON.stringify([{ nodeSvid: [] }]))
      .map(({ method, path }) => `${method.toUpperCase()} ${path}`);
    const nodeRoutes = Object.values(PUBLIC_ROUTES)
      .filter((r) => r.caller === "node")
      .map((r) => `${r.method} ${openApiPath(r.url)}`);
    expect(secured.sort()).toEqual(nodeRoutes.sort());
    expect(nodeRoutes).toContain("POST /v1/svids/x509");
    expect(operations(adminDoc).filter(({ op }) => op.security !== undefined)).toEqual([]);
  });

  it("lists refusal codes that exist, under the status the error table gives them", () => {
    let listed = 0;
    for (const doc of [publicDoc, adminDoc]) {
      for (const { op } of operations(doc)) {
        for (const [status, r] of Object.entries(op.responses as Record<string, Json>)) {
          for (const code of (r["x-hallmark-error-codes"] ?? []) as string[]) {
            expect(ERROR_CODES[code], code).toBeDefined();
            expect(String(ERROR_CODES[code]!.status)).toBe(status);
            listed++;
          }
        }
      }
    }
    expect(listed).toBeGreaterThan(50);
  });
});

describe("OpenAPI 3.1 validity", () => {
  it("the public document", () => expectValidOpenApi31(publicDoc));
  it("the admin document", () => expectValidOpenApi31(adminDoc));

  it("the structural check catches a dangling $ref and a path parameter with no template", () => {
    const broken = structuredClone(publicDoc);
    (broken.components.schemas as Json).Problem = undefined;
    expect(() => expectValidOpenApi31(broken)).toThrow(/\$ref #\/components\/schemas\/Problem/);
    const renamed = structuredClone(publicDoc);
    renamed.paths["/v1/attest/sessions/{session}/answer"] = renamed.paths["/v1/attest/sessions/{id}/answer"]!;
    delete renamed.paths["/v1/attest/sessions/{id}/answer"];
    expect(() => expectValidOpenApi31(renamed)).toThrow(/answer/);
  });
});

interface ReadmeExample {
  method: string;
  path: string;
  body: unknown;
  line: number;
}

/** Each ```json block of README.md, with the `METHOD /path` named on the line before it. */
function readmeExamples(): ReadmeExample[] {
  const lines = readFileSync(new URL("../../README.md", import.meta.url), "utf8").split("\n");
  const out: ReadmeExample[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== "```json") continue;
    const end = lines.indexOf("```", i + 1);
    const route = /`(GET|POST|PUT|PATCH|DELETE) (\/\S*)`/.exec(lines[i - 1] ?? "");
    expect(route, `README.md:${i + 1}: a json block needs the route on the line before it`).not.toBeNull();
    out.push({ method: route![1]!, path: route![2]!, body: JSON.parse(lines.slice(i + 1, end).join("\n")), line: i + 1 });
    i = end;
  }
  return out;
}

describe("README request examples", () => {
  const examples = readmeExamples();

  it("show a body for every public route that takes one", () => {
    const shown = new Set(examples.map((e) => `${e.method} ${e.path}`));
    const withBody = Object.values(PUBLIC_ROUTES)
      .filter((r) => "body" in r)
      .map((r) => `${r.method} ${openApiPath(r.url)}`);
    expect(withBody.length).toBeGreaterThan(4);
    expect(withBody.filter((r) => !shown.has(r))).toEqual([]);
  });

  it.each(examples.map((e) => [`${e.method} ${e.path} (README.md:${e.line})`, e] as const))("%s validates by the zod schema and by the document", (_name, e) => {
    const spec = ALL_SPECS.find((s) => s.method === e.method && openApiPath(s.url) === e.path);
    expect(spec?.body, `a route with a body for ${e.method} ${e.path}`).toBeDefined();
    const parsed = spec!.body!.safeParse(e.body);
    expect(parsed.success, JSON.stringify(parsed.error?.issues)).toBe(true);

    const doc = e.path.startsWith("/admin/") ? adminDoc : publicDoc;
    const documented = ((operationOf(doc, e.method, e.path).requestBody as Json).content as Record<string, { schema: Json }>)["application/json"]!.schema;
    const { $schema, ...fromZod } = z.toJSONSchema(spec!.body!, { target: "draft-2020-12", io: "input" });
    expect($schema).toBe(JSON_SCHEMA_DIALECT);
    expect(documented).toEqual(fromZod);
    expectValid(validatorOf(doc, e.method, e.path, "request"), e.body, "the document's request schema");

    // Both refuse a member the route does not know: the document is as strict as the validator.
    const extra = { ...(e.body as Json), surplus: 1 };
    expect(spec!.body!.safeParse(extra).success).toBe(false);
    expect(validatorOf(doc, e.method, e.path, "request")(extra)).toBe(false);
  });
});

describe("served by a real server", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.destroy();
  });
  const api = (path: string) => `${server.url}${path}`;
  const admin = (method: string, path: string, body?: unknown) => adminRequest(server.adminSocket, method, path, body);

  it("serves the public document to anyone over HTTPS and the admin document on the admin socket", async () => {
    const pub = await httpsRaw(api("/openapi.json"));
    expect(pub.status).toBe(200);
    expect(pub.body).toEqual(publicDoc);
    const adm = await admin("GET", "/admin/openapi.json");
    expect(adm.status).toBe(200);
    expect(adm.body).toEqual(adminDoc);
    // The admin API is not on the public listener.
    expect((await httpsRaw(api("/admin/openapi.json"))).status).toBe(404);
  });

  it("answers as documented: a join-token attestation, a node call over mutual TLS, bundles, admin calls", async () => {
    const spiffeId = "spiffe://example.org/node/openapi";
    const token = await admin("POST", "/admin/tokens", { spiffe_id: spiffeId, ttl_seconds: 600 });
    expect(token.status).toBe(201);
    expectValid(validatorOf(adminDoc, "POST", "/admin/tokens", "201"), token.body, "POST /admin/tokens");

    const session = await postJson(api("/v1/attest/sessions"), { attestor: "join_token" });
    expect(session.status).toBe(201);
    expectValid(validatorOf(publicDoc, "POST", "/v1/attest/sessions", "201"), session.body, "POST /v1/attest/sessions");

    const key = await newClientKey();
    const id = (session.body as { session_id: string }).session_id;
    const issued = await postJson(api(`/v1/attest/sessions/${id}/evidence`), { csr: key.csrPem, evidence: { token: (token.body as { token: string }).token } });
    expect(issued.status).toBe(200);
    expectValid(validatorOf(publicDoc, "POST", "/v1/attest/sessions/{id}/evidence", "200"), issued.body, "evidence");
    const svid = issued.body as { svid: { cert_chain_pem: string }; bundle_pem: string };

    const entry = await admin("POST", "/admin/entries", { parent_id: spiffeId, spiffe_id: "spiffe://example.org/web", selectors: ["unix:uid:1000"] });
    expect(entry.status).toBe(201);
    expectValid(validatorOf(adminDoc, "POST", "/admin/entries", "201"), entry.body, "POST /admin/entries");

    const mtls = { ca: svid.bundle_pem, cert: svid.svid.cert_chain_pem, key: key.privateKeyPem };
    const entries = await httpsRaw(api("/v1/node/entries"), mtls);
    expect(entries.status).toBe(200);
    expectValid(validatorOf(publicDoc, "GET", "/v1/node/entries", "200"), entries.body, "GET /v1/node/entries");
    const jwt = await postJson(api("/v1/svids/jwt"), { audience: ["https://api.example.org"] }, mtls);
    expect(jwt.status).toBe(200);
    expectValid(validatorOf(publicDoc, "POST", "/v1/svids/jwt", "200"), jwt.body, "POST /v1/svids/jwt");

    for (const path of ["/v1/bundle", "/.well-known/openid-configuration", "/.well-known/jwks.json", "/.well-known/spiffe-bundle", "/healthz", "/readyz"]) {
      const r = await httpsRaw(api(path));
      expect(r.status, path).toBe(200);
      expectValid(validatorOf(publicDoc, "GET", path, "200"), r.body, path);
    }
    for (const path of ["/admin/nodes", "/admin/entries", "/admin/ca/keys", "/admin/bundle", "/admin/audit/verify"]) {
      const r = await admin("GET", path);
      expect(r.status, path).toBe(200);
      expectValid(validatorOf(adminDoc, "GET", path, "200"), r.body, path);
    }
  });

  it("refuses as documented: the Problem schema, under the status and code the operation lists", async () => {
    const cases = [
      { r: await postJson(api("/v1/attest/sessions"), { attestor: 5 }), method: "POST", path: "/v1/attest/sessions", doc: publicDoc },
      { r: await postJson(api("/v1/attest/sessions"), { attestor: "no_such" }), method: "POST", path: "/v1/attest/sessions", doc: publicDoc },
      { r: await postJson(api("/v1/svids/jwt"), { audience: ["a"] }), method: "POST", path: "/v1/svids/jwt", doc: publicDoc },
      {
        r: await httpsRaw(api(`/v1/attest/sessions/${crypto.randomUUID()}/answer`), {
          method: "POST",
          body: JSON.stringify({ response: {} }),
          headers: { "content-type": "application/json" },
        }),
        method: "POST",
        path: "/v1/attest/sessions/{id}/answer",
        doc: publicDoc,
      },
    ];
    const codes: string[] = [];
    for (const { r, method, path, doc } of cases) {
      expect(r.contentType).toContain("application/problem+json");
      const problem = r.body as { code: string; status: number };
      expectValid(validatorOf(doc, method, path, String(r.status), "application/problem+json"), problem, `${method} ${path}`);
      const listed = (operationOf(doc, method, path).responses as Record<string, Json>)[String(r.status)]!["x-hallmark-error-codes"];
      expect(listed, `${method} ${path} ${r.status}`).toContain(problem.code);
      codes.push(problem.code);
    }
    expect(codes).toEqual(["invalid_request", "unknown_attestor", "client_cert_required", "session_not_found"]);
    const adm = await admin("DELETE", `/admin/entries/${crypto.randomUUID()}`);
    expect(adm.status).toBe(404);
    expectValid(validatorOf(adminDoc, "DELETE", "/admin/entries/{id}", "404", "application/problem+json"), adm.body, "DELETE /admin/entries/{id}");
  });
});
