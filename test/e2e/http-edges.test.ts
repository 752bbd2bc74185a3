import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../helpers/cli.js";
import { type RawResponse, type RawTarget, rawExchange } from "../helpers/raw-http.js";
import { type TestServer, startTestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Requests that go wrong before any route runs (Node's HTTP parser, Fastify's router) are answered
 * like every other refusal: problem+json with a stable code, never a bare JSON error, a dropped
 * connection or a 500. Sent as exact bytes over real sockets to all three listeners: the public
 * HTTPS API, the admin Unix socket and the https_web bundle endpoint.
 */
const work = tempDir("http-edges");
let server: TestServer;
let targets: Record<"public" | "admin" | "web", RawTarget>;

beforeAll(async () => {
  const key = join(work.path, "web.key");
  const cert = join(work.path, "web.pem");
  const r = await run("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
    "-subj", "/CN=localhost", "-days", "2", "-addext", "subjectAltName=DNS:localhost",
  ]);
  if (r.code !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  const configFile = join(work.path, "hallmark.yaml");
  writeFileSync(configFile, `federation:\n  bundleEndpoint:\n    listen: 127.0.0.1:0\n    certFile: ${cert}\n    keyFile: ${key}\n`);
  server = await startTestServer({ configFile });
  targets = { public: { url: server.url }, admin: { socketPath: server.adminSocket }, web: { url: server.webBundleUrl! } };
}, 60_000);

afterAll(async () => {
  await server?.destroy();
  work.remove();
});

function expectProblem(r: RawResponse, status: number, code: string): void {
  expect(r.status, r.raw).toBe(status);
  expect(r.headers["content-type"], r.raw).toContain("application/problem+json");
  const body = JSON.parse(r.body) as { status: number; code: string; type: string };
  expect(body).toMatchObject({ status, code, type: `urn:hallmark:error:${code}` });
  expect(r.body).not.toMatch(/\.ts:\d+|\.js:\d+|at [A-Za-z]+ \(/);
}

const get = (path: string, method = "GET") => `${method} ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`;
const post = (path: string, body: string) =>
  `POST ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
const listeners = ["public", "admin", "web"] as const;

describe("errors before routing are problem+json on every listener", () => {
  it("bad JSON bodies: invalid_request", async () => {
    expectProblem(await rawExchange(targets.public, post("/v1/attest/sessions", "{not json")), 400, "invalid_request");
    expectProblem(await rawExchange(targets.admin, post("/admin/tokens", '{"spiffe_id":')), 400, "invalid_request");
  });

  it.each(listeners)("%s: a path that is not valid percent-encoding is invalid_request", async (name) => {
    expectProblem(await rawExchange(targets[name], get("/v1/%ff%fe")), 400, "invalid_request");
    expectProblem(await rawExchange(targets[name], get("/.well-known/%ff%fe/x")), 400, "invalid_request");
  });

  it.each(listeners)("%s: a 20 KB header is 431 headers_too_large", async (name) => {
    const request = `GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ${"a".repeat(20 * 1024)}\r\nConnection: close\r\n\r\n`;
    expectProblem(await rawExchange(targets[name], request), 431, "headers_too_large");
  });

  it.each(listeners)("%s: CONNECT is answered 405 method_not_allowed, not dropped", async (name) => {
    const r = await rawExchange(targets[name], "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n");
    expectProblem(r, 405, "method_not_allowed");
    expect(r.headers).toHaveProperty("allow");
  });

  it.each(listeners)("%s: a method Node's parser does not know, or a garbled request line, is 400 invalid_request", async (name) => {
    expectProblem(await rawExchange(targets[name], get("/", "FROB")), 400, "invalid_request");
    expectProblem(await rawExchange(targets[name], "GET / HTTP/9.9 junk\r\n\r\n"), 400, "invalid_request");
    const badChunk = "POST /v1/attest/sessions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    expectProblem(await rawExchange(targets[name], badChunk), 400, "invalid_request");
  });

  it.each(listeners)("%s: an Expect header other than 100-continue is 417 expectation_failed", async (name) => {
    const r = await rawExchange(targets[name], "GET /healthz HTTP/1.1\r\nHost: localhost\r\nExpect: 200-ok\r\nConnection: close\r\n\r\n");
    expectProblem(r, 417, "expectation_failed");
  });

  it("a path served for other methods is 405 method_not_allowed with an Allow header (RFC 9110 §15.5.6)", async () => {
    const cases: Array<[RawTarget, string, string, string]> = [
      [targets.public, "GET", "/v1/attest/sessions", "POST"],
      [targets.public, "DELETE", "/readyz", "GET, HEAD"],
      [targets.public, "PUT", "/v1/attest/sessions/00000000-0000-4000-8000-000000000000/evidence", "POST"],
      [targets.public, "TRACE", "/healthz", "GET, HEAD"],
      [targets.admin, "PATCH", "/admin/entries", "GET, HEAD, POST"],
      [targets.admin, "GET", "/admin/entries/some-id", "DELETE"],
      [targets.web, "POST", "/.well-known/spiffe-bundle", "GET, HEAD"],
    ];
    for (const [target, method, path, allow] of cases) {
      const r = await rawExchange(target, get(path, method));
      expectProblem(r, 405, "method_not_allowed");
      expect(r.headers.allow, `${method} ${path}`).toBe(allow);
    }
  });

  it.each(listeners)("%s: an unknown path is still 404 not_found, with no Allow header", async (name) => {
    const r = await rawExchange(targets[name], get("/no/such/thing?x=1", "POST"));
    expectProblem(r, 404, "not_found");
    expect(r.headers).not.toHaveProperty("allow");
  });

  it("the server still answers normally after all of it", async () => {
    const r = await rawExchange(targets.public, get("/readyz"));
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ status: "ready" });
  });
});
