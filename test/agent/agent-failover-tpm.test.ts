import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { tpmResidentSigner } from "../../src/attestors/tpm/resident-key.js";
import { type AgentCore, startAgentCore } from "../../src/agent/run-agent.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { createProducer } from "../../src/client/producers.js";
import { ServerList } from "../../src/client/server-list.js";
import { createLogger } from "../../src/log.js";
import { closedPort } from "../helpers/dead-servers.js";
import { waitFor } from "../helpers/kept-alive.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { type Swtpm, startSwtpm } from "../helpers/swtpm.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 13, item 2: a node whose key stays in the TPM authenticates each connection with a
 * proof signed in the TPM. When the server it used goes away and the server is found at the
 * next URL of the list, the new connection there carries a new proof, and node calls go on.
 */
const NODE = "spiffe://example.org/hallmark/agent/tpm/failover";
const log = createLogger(process.env.HALLMARK_TEST_LOG ?? "silent");
const work = tempDir("agent-failover-tpm");
const serverData = join(work.path, "server");
let tpm: Swtpm;
let server: TestServer | undefined;
let core: AgentCore | undefined;
const overrides = (listen: string) => ({ listen, attestors: { tpm: { ekRoots: [join(work.path, "root.pem")], idTemplate: "/hallmark/agent/tpm/failover" } } });

beforeAll(async () => {
  tpm = await startSwtpm();
  writeFileSync(join(work.path, "root.pem"), tpm.rootCertPem + tpm.issuerCertPem);
}, 60_000);
afterAll(async () => {
  await core?.close();
  await server?.close();
  await tpm?.stop();
  work.remove();
});

it("makes a new node proof on the connection to the next server of the list, and goes on syncing", async () => {
  const [dead, first, second] = [await closedPort(), await closedPort(), await closedPort()].map((p) => `127.0.0.1:${p}`);
  server = await startTestServer({ dataDir: serverData, overrides: overrides(first!) });
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server!.adminSocket, method, path, body));
  const bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  const failovers: Array<{ failed: readonly string[]; answeredBy: string }> = [];
  const servers = new ServerList([`https://${dead}`, `https://${first}`, `https://${second}`], { onFailover: (failed, answeredBy) => failovers.push({ failed, answeredBy }) });
  let signatures = 0;
  core = await startAgentCore({
    server: servers,
    trustBundlePem: bundle,
    dataDir: join(work.path, "agent"),
    attestor: "tpm",
    producer: () => createProducer({ attestor: "tpm", tpm: tpm.tcti, tpmKeyResident: true }),
    residentKeySigner: (file) => {
      const sign = tpmResidentSigner(tpm.tcti, file);
      return (m) => (signatures++, sign(m));
    },
    pollIntervalSeconds: 0.25,
    retry: { minMs: 100, maxMs: 400 },
    log,
  });
  const agent = core;
  expect(agent.node.spiffeId).toBe(NODE);
  await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/on-first", selectors: ["unix:uid:1001"] });
  await waitFor(() => agent.entries.entries.size === 1, "the entry from the first server", 10_000);
  expect(failovers[0]).toEqual({ failed: [`https://${dead} (ECONNREFUSED)`], answeredBy: `https://${first}` });
  const signedOnFirst = signatures;
  expect(signedOnFirst).toBeGreaterThanOrEqual(1);

  // The server moves to the third URL of the list (same data: the node is known there).
  await server.close();
  server = await startTestServer({ dataDir: serverData, overrides: overrides(second!) });
  await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/on-second", selectors: ["unix:uid:1002"] });
  await waitFor(() => agent.entries.entries.size === 2, "the entry from the server at the next URL", 15_000);
  // In turn from the one that answered last: the second server came right after it, the dead one was not tried.
  expect(failovers.at(-1)).toEqual({ failed: [`https://${first} (ECONNREFUSED)`], answeredBy: `https://${second}` });
  // The connection to the next server carried its own proof, signed in the TPM; the node SVID was not refused.
  expect(signatures).toBeGreaterThan(signedOnFirst);
  expect((await agent.identities.x509Svids(["unix:uid:1002"])).map((s) => s.spiffeId)).toEqual(["spiffe://example.org/on-second"]);
  expect(agent.node.removed).toBeUndefined();
}, 60_000);
