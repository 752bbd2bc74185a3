import { afterAll, beforeAll, expect, it } from "vitest";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { KeptAliveNode, waitFor } from "../helpers/kept-alive.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/**
 * Issue 7, item 2, in real time: a kept-alive connection authenticated by a node SVID is closed
 * by the server when that SVID expires, even if it sends nothing; a new handshake with the
 * expired SVID is refused.
 */
const NODE_TTL_SECONDS = 3;

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({
    overrides: { svid: { nodeTtl: NODE_TTL_SECONDS, x509Ttl: 3600, jwtTtl: 300, maxTtl: 86400, nodeRenewalOverlap: 0 } },
  });
});
afterAll(async () => {
  await server?.destroy();
});

it("closes an idle connection when its client SVID expires, and refuses the expired SVID afterwards", async () => {
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  const nodeId = "spiffe://example.org/node/short-lived";
  await admin("POST", "/admin/entries", { parent_id: nodeId, spiffe_id: "spiffe://example.org/short-lived/web", selectors: [] });
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: nodeId, ttl_seconds: 600 })) as { token: string };
  const bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  const svid = await attest({ server: server.url, tls: { trustBundlePem: bundle }, producer: joinTokenProducer(token) });
  const node = new KeptAliveNode(server.url, svid);
  try {
    expect((await node.x509("spiffe://example.org/short-lived/web")).status).toBe(200);
    expect(node.closed).toBe(false);
    // Nothing is sent from here on: only the server can close the connection.
    await waitFor(() => node.closed, "the server to close the connection at the SVID's expiry", (NODE_TTL_SECONDS + 5) * 1000);
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(svid.expiresAt));
    const again = await node.x509("spiffe://example.org/short-lived/web").catch((e: unknown) => e);
    // A new handshake with the expired certificate fails verification: no identity is served.
    expect(again instanceof Error || (again as { status: number }).status === 401).toBe(true);
    if (!(again instanceof Error)) expect((again as { body: { code: string } }).body.code).toMatch(/^(client_cert_invalid|node_svid_expired)$/);
  } finally {
    node.destroy();
  }
});
