import { X509Certificate } from "node:crypto";
import { createServer } from "node:net";
import { Writable } from "node:stream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type AgentCore, startAgentCore } from "../../src/agent/run-agent.js";
import { joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { createLogger } from "../../src/log.js";
import { waitFor } from "../helpers/kept-alive.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 9, rotation in real time with short TTLs: the agent renews its node SVID and the
 * workload SVIDs at half their life, and survives a server restart on the same data directory
 * and port (it backs off while the server is down, then catches up with the entries).
 */
const NODE = "spiffe://example.org/node/agent-renewal";
const SVID_TTLS = { nodeTtl: 8, x509Ttl: 4, jwtTtl: 60, maxTtl: 86400, nodeRenewalOverlap: 0 };
// The agent's warnings, to see it fail and back off while the server is down.
const warnings: string[] = [];
const log = createLogger("warn", new Writable({ write: (chunk: Buffer, _enc, done) => (warnings.push(String(chunk)), done()) }));
const agentData = tempDir("agent-renewal");
// The server's data directory is the test's, not startTestServer's: the test restarts the server
// on it, and a restarted server leaves its directory in place when destroyed.
const serverData = tempDir("agent-renewal-server");
let server: TestServer;
let listen: string;
let core: AgentCore | undefined;

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

beforeAll(async () => {
  listen = `127.0.0.1:${await freePort()}`;
  server = await startTestServer({ dataDir: serverData.path, overrides: { listen, svid: SVID_TTLS } });
});
afterAll(async () => {
  await core?.close();
  await server?.destroy();
  agentData.remove();
  serverData.remove();
});

it("renews the node SVID and workload SVIDs at half-life, and survives a server restart", async () => {
  await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/rotating", selectors: ["unix:uid:1001"] });
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
  const bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  let tokenUses = 0;
  core = await startAgentCore({
    server: server.url,
    trustBundlePem: bundle,
    dataDir: agentData.path,
    attestor: "join_token",
    producer: async () => {
      tokenUses++;
      return joinTokenProducer(token);
    },
    pollIntervalSeconds: 0.25,
    retry: { minMs: 100, maxMs: 400 },
    log,
  });
  const agent = core;
  const serialOf = async () => {
    const [svid] = await agent.identities.x509Svids(["unix:uid:1001"]);
    return svid ? new X509Certificate(svid.certChain[0]!).serialNumber : undefined;
  };

  // Workload SVID: a new certificate after half of its 4 s, with a change notice.
  const firstSerial = await serialOf();
  expect(firstSerial).toBeDefined();
  let notices = 0;
  agent.identities.onChange(() => notices++);
  await waitFor(() => notices > 0, "a workload SVID renewal notice", 10_000);
  expect(await serialOf()).not.toBe(firstSerial);

  // Node SVID: renewed over mTLS (join token), never attested again.
  const firstNodeExpiry = agent.node.expiresAt.getTime();
  await waitFor(() => agent.node.expiresAt.getTime() > firstNodeExpiry, "a node SVID renewal", 10_000);

  // Server restart on the same data directory and port; the agent fails meanwhile and retries.
  await server.close();
  const before = warnings.length;
  await waitFor(() => warnings.slice(before).some((w) => w.includes("failed; retrying")), "the agent to notice the server is down", 10_000);
  server = await startTestServer({ dataDir: server.dataDir, overrides: { listen, svid: SVID_TTLS } });
  const afterRestart = (await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/after-restart", selectors: ["unix:uid:1002"] })) as { id: string };
  await waitFor(() => agent.entries.entries.has(afterRestart.id), "the entry made after the restart to reach the agent", 15_000);
  expect((await agent.identities.x509Svids(["unix:uid:1002"])).map((s) => s.spiffeId)).toEqual(["spiffe://example.org/after-restart"]);
  const expiryAfterRestart = agent.node.expiresAt.getTime();
  await waitFor(() => agent.node.expiresAt.getTime() > expiryAfterRestart, "a node SVID renewal after the restart", 12_000);

  expect(agent.node.removed).toBeUndefined();
  expect(tokenUses).toBe(1);

  // Down past the node SVID's expiry: a join-token node cannot come back, and says so.
  await server.close();
  const why = await agent.failed;
  expect(why).toMatchObject({ code: "agent_cannot_reattest", message: expect.stringMatching(/expired .* join-token node cannot attest again/) });
  expect(Date.now()).toBeGreaterThanOrEqual(agent.node.expiresAt.getTime());
  expect(await agent.identities.x509Svids(["unix:uid:1001"])).toEqual([]);
  expect(tokenUses).toBe(1);
  server = await startTestServer({ dataDir: server.dataDir, overrides: { listen, svid: SVID_TTLS } });
}, 60_000);
