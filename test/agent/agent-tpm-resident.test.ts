import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { afterAll, beforeAll, expect, it } from "vitest";
import { tpmResidentSigner } from "../../src/attestors/tpm/resident-key.js";
import { type AgentCore, startAgentCore } from "../../src/agent/run-agent.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { createProducer } from "../../src/client/producers.js";
import { createLogger } from "../../src/log.js";
import { openSqliteStore } from "../../src/store/sqlite.js";
import { waitFor } from "../helpers/kept-alive.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { type Swtpm, startSwtpm } from "../helpers/swtpm.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 9, item 1: `hallmark agent --attestor tpm --tpm-key-resident`. The agent attests with a
 * node key created in the TPM, makes every node call with channel-bound proofs signed in the TPM
 * (no client certificate), and serves a workload its X.509-SVID; no private key of the node is
 * ever written to the data directory.
 */
const NODE = "spiffe://example.org/hallmark/agent/tpm/resident-agent";
const log = createLogger(process.env.HALLMARK_TEST_LOG ?? "silent");
const work = tempDir("agent-tpm-resident");
let tpm: Swtpm;
let server: TestServer;
let core: AgentCore | undefined;

beforeAll(async () => {
  tpm = await startSwtpm();
  writeFileSync(join(work.path, "root.pem"), tpm.rootCertPem + tpm.issuerCertPem);
  server = await startTestServer({ overrides: { attestors: { tpm: { ekRoots: [join(work.path, "root.pem")], idTemplate: "/hallmark/agent/tpm/resident-agent" } } } });
}, 60_000);
afterAll(async () => {
  await core?.close();
  await server?.destroy();
  await tpm?.stop();
  work.remove();
});

it("attests with a TPM-resident key, then syncs entries and fetches a workload SVID with proofs signed in the TPM", async () => {
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  const bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  const dataDir = join(work.path, "agent");
  let signatures = 0;
  core = await startAgentCore({
    server: server.url,
    trustBundlePem: bundle,
    dataDir,
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

  await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/resident-child", selectors: ["unix:uid:1001"] });
  await waitFor(() => agent.entries.entries.size === 1, "the new entry to reach the agent", 10_000);
  const [svid] = await agent.identities.x509Svids(["unix:uid:1001"]);
  expect(svid!.spiffeId).toBe("spiffe://example.org/resident-child");
  // The node calls went with proofs made in the TPM: the kept-alive connections took a few, not one per call.
  expect(signatures).toBeGreaterThanOrEqual(1);

  // The node's key never left the TPM: no svid.key, no PEM private key anywhere in the data
  // directory; svid.tpmkey holds only the EK-wrapped blob, and its public key is the SVID's.
  expect(existsSync(join(dataDir, "svid.key"))).toBe(false);
  for (const f of readdirSync(dataDir)) expect(readFileSync(join(dataDir, f), "utf8")).not.toMatch(/PRIVATE KEY/);
  const tpmKey = JSON.parse(readFileSync(join(dataDir, "svid.tpmkey"), "utf8")) as { public: string; private: string };
  expect(tpmKey.private.length).toBeGreaterThan(0);
  const leaf = new X509Certificate(readFileSync(join(dataDir, "svid.pem")));
  expect(leaf.publicKey.asymmetricKeyType).toBe("ec");

  // The server saw no refusal of this node's credential.
  const store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
  try {
    const refused = (await store.audit.list(0, 100_000)).filter((r) => r.event === "authenticate_node" && r.outcome !== "success");
    expect(refused).toEqual([]);
  } finally {
    await store.close();
  }

  // A restart reuses the stored SVID and its TPM key (no new attestation) and calls the server again.
  await agent.close();
  let attestations = 0;
  core = await startAgentCore({
    server: server.url,
    trustBundlePem: bundle,
    dataDir,
    attestor: "tpm",
    producer: () => (attestations++, createProducer({ attestor: "tpm", tpm: tpm.tcti, tpmKeyResident: true })),
    residentKeySigner: (file) => tpmResidentSigner(tpm.tcti, file),
    pollIntervalSeconds: 0.25,
    retry: { minMs: 100, maxMs: 400 },
    log,
  });
  const restarted = core;
  await waitFor(() => restarted.entries.entries.size === 1, "the entry after a restart", 10_000);
  expect((await restarted.identities.x509Svids(["unix:uid:1001"])).map((s) => s.spiffeId)).toEqual(["spiffe://example.org/resident-child"]);
  expect(attestations).toBe(0);
  expect(restarted.node.removed).toBeUndefined();
}, 60_000);
