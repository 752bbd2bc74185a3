import { join } from "node:path";
import { createLocalJWKSet, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SvidFiles } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { httpsRaw, postJson } from "../helpers/https.js";
import { admitJoinTokenNode } from "../helpers/nodes.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/**
 * JWT-SVID audiences through the real API, as an attested node over mutual TLS: anything that can
 * hide or reorder what an audience appears to say (controls, bidirectional overrides, zero-width
 * characters, lone surrogates, line separators) is refused with invalid_audience, and audited.
 */
const NODE_ID = "spiffe://example.org/node/aud";
const WORKLOAD_ID = "spiffe://example.org/workload/aud";
let server: TestServer;
let node: SvidFiles;

beforeAll(async () => {
  server = await startTestServer();
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  node = await admitJoinTokenNode(server, NODE_ID);
  await admin("POST", "/admin/entries", { spiffe_id: WORKLOAD_ID, parent_id: NODE_ID, selectors: [] });
}, 60_000);

afterAll(async () => {
  await server?.destroy();
});

const fetchJwt = (audience: string[]) =>
  postJson(`${server.url}/v1/svids/jwt`, { audience }, { cert: node.certChainPem, key: node.privateKeyPem! });

async function auditedRefusals(): Promise<number> {
  const store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
  try {
    return (await store.audit.list(0, 100_000)).filter((r) => r.outcome === "refused" && r.code === "invalid_audience").length;
  } finally {
    await store.close();
  }
}

describe("JWT-SVID audiences over the API", () => {
  const hostile: Array<[string, string]> = [
    ["RIGHT-TO-LEFT OVERRIDE U+202E", "https://api.example.org/\u202Egpj.exe"],
    ["ARABIC LETTER MARK U+061C", "api\u061C.example.org"],
    ["LEFT-TO-RIGHT MARK U+200E", "api.example.org\u200E"],
    ["RIGHT-TO-LEFT MARK U+200F", "\u200Fapi.example.org"],
    ["LEFT-TO-RIGHT EMBEDDING U+202A", "a\u202Ab"],
    ["POP DIRECTIONAL FORMATTING U+202C", "a\u202Cb"],
    ["LEFT-TO-RIGHT ISOLATE U+2066", "a\u2066b"],
    ["POP DIRECTIONAL ISOLATE U+2069", "a\u2069b"],
    ["ZERO WIDTH SPACE U+200B", "api.exa\u200Bmple.org"],
    ["a C0 control (NUL)", "a\u0000b"],
    ["a C0 control (ESC)", "a\u001b[31mb"],
    ["DEL", "a\u007Fb"],
    ["a C1 control (NEL U+0085)", "a\u0085b"],
    ["a C1 control (CSI U+009B)", "a\u009B31mb"],
    ["LINE SEPARATOR U+2028", "a\u2028b"],
    ["a lone high surrogate", "a\uD800b"],
    ["a lone low surrogate", "a\uDC00"],
  ];

  it.each(hostile)("refuses an audience with %s: 400 invalid_audience, audited", async (_what, audience) => {
    const before = await auditedRefusals();
    const r = await fetchJwt(["https://ok.example.org", audience]);
    expect(r.status, r.text).toBe(400);
    expect(r.contentType).toContain("application/problem+json");
    expect(r.body).toMatchObject({ code: "invalid_audience" });
    expect(await auditedRefusals()).toBe(before + 1);
  });

  it("the lone surrogate really reaches the server as one (JSON \\ud800 escape, not replaced by the client)", async () => {
    const body = '{"audience":["a\\ud800b"]}';
    const r = await httpsRaw(`${server.url}/v1/svids/jwt`, {
      method: "POST",
      body,
      headers: { "content-type": "application/json" },
      cert: node.certChainPem,
      key: node.privateKeyPem!,
    });
    expect(r.status, r.text).toBe(400);
    expect(r.body).toMatchObject({ code: "invalid_audience" });
  });

  it("accepts ordinary audiences, non-ASCII letters and emoji included, and signs them unchanged", async () => {
    const audience = ["https://api.example.org", "spiffe://example.org/db", "https://bücher.example/ℵ", "team-😀"];
    const r = await fetchJwt(audience);
    expect(r.status, r.text).toBe(200);
    const { token } = r.body as { token: string };
    const jwks = (await httpsRaw(`${server.url}/.well-known/jwks.json`)).body;
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks as never), { audience: "https://bücher.example/ℵ" });
    expect(payload.aud).toEqual(audience);
    expect(payload.sub).toBe(WORKLOAD_ID);
  });
});
