import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type AgentCore, startAgentCore } from "../../src/agent/run-agent.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { createProducer } from "../../src/client/producers.js";
import { createLogger } from "../../src/log.js";
import { waitFor } from "../helpers/kept-alive.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { type Swtpm, startSwtpm } from "../helpers/swtpm.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 9, a hardware node: the agent attests with a TPM (swtpm), and at half of the node SVID's
 * life attests again with fresh evidence (the server refuses mTLS renewal to such nodes); an
 * alias entry on the node's TPM selectors reaches its workloads.
 */
const NODE = "spiffe://example.org/hallmark/agent/tpm/agent-node";
const log = createLogger(process.env.HALLMARK_TEST_LOG ?? "silent");
const work = tempDir("agent-tpm");
let tpm: Swtpm;
let server: TestServer;
let core: AgentCore | undefined;

beforeAll(async () => {
  tpm = await startSwtpm();
  writeFileSync(join(work.path, "root.pem"), tpm.rootCertPem + tpm.issuerCertPem);
  server = await startTestServer({
    overrides: {
      attestors: { tpm: { ekRoots: [join(work.path, "root.pem")], idTemplate: "/hallmark/agent/tpm/agent-node" } },
      svid: { nodeTtl: 6, x509Ttl: 3600, jwtTtl: 300, maxTtl: 86400, nodeRenewalOverlap: 0 },
    },
  });
}, 60_000);
afterAll(async () => {
  await core?.close();
  await server?.destroy();
  await tpm?.stop();
  work.remove();
});

it("attests with the TPM, attests again at half-life with fresh evidence, and serves an alias entry", async () => {
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  const bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  let attestations = 0;
  core = await startAgentCore({
    server: server.url,
    trustBundlePem: bundle,
    dataDir: join(work.path, "agent"),
    attestor: "tpm",
    producer: () => {
      attestations++;
      return createProducer({ attestor: "tpm", tpm: tpm.tcti });
    },
    pollIntervalSeconds: 0.25,
    retry: { minMs: 100, maxMs: 400 },
    log,
  });
  const agent = core;
  expect(agent.node.spiffeId).toBe(NODE);
  const nodes = (await admin("GET", "/admin/nodes")) as { nodes: Array<{ spiffe_id: string; selectors: string[] }> };
  const ekSelector = nodes.nodes.find((n) => n.spiffe_id === NODE)!.selectors.find((s) => s.startsWith("tpm:ek_pubhash:"))!;
  expect(ekSelector).toBeDefined();

  const alias = (await admin("POST", "/admin/entries", { parent_id: "spiffe://example.org/hallmark/server", spiffe_id: "spiffe://example.org/tpm-workload", selectors: [ekSelector] })) as { id: string };
  const child = (await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/tpm-child", selectors: ["unix:uid:1001"] })) as { id: string };
  // Both, not only the first: a long poll answers at the first change, so they may come in two answers.
  await waitFor(() => agent.entries.entries.has(alias.id) && agent.entries.entries.has(child.id), "the alias and child entries to reach the agent", 10_000);
  // The alias entry's selectors are the node's, not a workload's: it matches a workload only if the
  // workload presents them too, which a unix workload never does.
  expect((await agent.identities.x509Svids(["unix:uid:1001"])).map((s) => s.spiffeId)).toEqual(["spiffe://example.org/tpm-child"]);

  const firstExpiry = agent.node.expiresAt.getTime();
  await waitFor(() => agent.node.expiresAt.getTime() > firstExpiry, "a re-attestation at half-life", 15_000);
  expect(attestations).toBeGreaterThanOrEqual(2);
  expect(agent.node.removed).toBeUndefined();
  expect((await agent.identities.x509Svids(["unix:uid:1001"])).length).toBe(1);

  // A ban evicts the node and refuses its re-attestation: the agent stops serving and says why.
  await admin("POST", "/admin/nodes/ban", { spiffe_id: NODE });
  expect(await agent.failed).toMatchObject({ code: "agent_node_removed", message: expect.stringMatching(/node_evicted|node_banned/) });
  expect(await agent.identities.x509Svids(["unix:uid:1001"])).toEqual([]);
}, 60_000);
