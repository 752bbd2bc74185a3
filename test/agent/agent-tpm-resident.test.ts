import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { X509Certificate } from "node:crypto";
import { afterAll, beforeAll, expect, it } from "vitest";
import { tpmResidentSigner } from "../../src/attestors/tpm/resident-key.js";
import { type AgentCore, startAgentCore } from "../../src/agent/run-agent.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { createProducer } from "../../src/client/producers.js";
import { createLogger } from "../../src/log.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { waitFor } from "../helpers/kept-alive.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { type Swtpm, startSwtpm } from "../helpers/swtpm.js";
import { tempDir } from "../helpers/tmp.js";
import { WorkloadApiClient } from "../../src/workload-api/client.js";

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
let child: ChildProcess | undefined;

beforeAll(async () => {
  tpm = await startSwtpm();
  writeFileSync(join(work.path, "root.pem"), tpm.rootCertPem + tpm.issuerCertPem);
  server = await startTestServer({ overrides: { attestors: { tpm: { ekRoots: [join(work.path, "root.pem")], idTemplate: "/hallmark/agent/tpm/resident-agent" } } } });
}, 60_000);
afterAll(async () => {
  child?.kill("SIGKILL");
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

it("runs as `hallmark agent --attestor tpm --tpm-key-resident` and serves a workload its SVID on the socket", async () => {
  await core?.close();
  core = undefined;
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  const bundleFile = join(work.path, "bundle.pem");
  writeFileSync(bundleFile, ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem);
  const uid = process.getuid!();
  await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/resident-process-child", selectors: [`unix:uid:${uid}`] });
  const dataDir = join(work.path, "agent-process");
  const socketPath = join(work.path, "agent.sock");
  const bin = fileURLToPath(new URL("../../bin/hallmark.js", import.meta.url));
  let output = "";
  child = spawn(
    process.execPath,
    [bin, "agent", "--server", server.url, "--trust-bundle", bundleFile, "--data-dir", dataDir, "--socket", socketPath, "--poll-interval", "1s", "--attestor", "tpm", "--tpm", tpm.tcti, "--tpm-key-resident"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  const client = new WorkloadApiClient(socketPath);
  try {
    let svids: Awaited<ReturnType<WorkloadApiClient["fetchX509"]>> = [];
    for (let i = 0; i < 100 && svids.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 200));
      if (!output.includes("agent: serving the Workload API")) continue;
      svids = await client.fetchX509().catch(() => []);
    }
    expect(svids.map((s) => s.spiffeId), output.slice(-2000)).toContain("spiffe://example.org/resident-process-child");
  } finally {
    client.close();
  }
  expect(existsSync(join(dataDir, "svid.tpmkey"))).toBe(true);
  expect(existsSync(join(dataDir, "svid.key"))).toBe(false);
  const exited = new Promise<number | null>((r) => child!.once("exit", (code) => r(code)));
  child.kill("SIGTERM");
  expect(await exited).toBe(0);
  child = undefined;
}, 60_000);
