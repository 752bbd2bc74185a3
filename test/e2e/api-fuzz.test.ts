import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { httpsRaw, postJson } from "../helpers/https.js";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ overrides: { attestors: { aws_nitro: {}, amd_sev_snp: {}, tpm: {} } } });
});
afterAll(async () => {
  await server?.destroy();
});

/** Whatever arrives, the answer is a 4xx problem+json with a code: never a 500, never a stack trace. */
function expectClientError(r: { status: number; contentType: string; body: unknown; text: string }): void {
  expect(r.status, r.text).toBeGreaterThanOrEqual(400);
  expect(r.status, r.text).toBeLessThan(500);
  expect(r.contentType).toContain("application/problem+json");
  expect(typeof (r.body as { code?: unknown }).code).toBe("string");
  expect(r.text).not.toMatch(/\.ts:\d+|\.js:\d+|at [A-Za-z]+ \(/);
}

describe("the public API under random input", () => {
  it("answers random JSON evidence for every attestor with a 4xx problem", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("join_token", "aws_nitro", "amd_sev_snp", "tpm"), fc.jsonValue({ maxDepth: 3 }), fc.string({ maxLength: 200 }), async (attestor, evidence, csr) => {
        const s = await postJson(`${server.url}/v1/attest/sessions`, { attestor });
        const { session_id } = s.body as { session_id: string };
        expectClientError(await postJson(`${server.url}/v1/attest/sessions/${session_id}/evidence`, { csr: csr || "x", evidence }));
      }),
      { numRuns: 60 },
    );
  });

  it("answers random bytes as bodies, paths and content types with a 4xx problem", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("/v1/attest/sessions", "/v1/attest/sessions/00000000-0000-4000-8000-000000000000/answer", "/v1/svids/x509", "/v1/node/renew"),
        fc.uint8Array({ maxLength: 300 }),
        fc.constantFrom("application/json", "text/plain", "application/octet-stream"),
        async (path, body, type) => {
          expectClientError(await httpsRaw(`${server.url}${path}`, { method: "POST", body: Buffer.from(body), headers: { "content-type": type } }));
        },
      ),
      { numRuns: 60 },
    );
  });
});
