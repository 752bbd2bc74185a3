import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentCore } from "../../src/agent/run-agent.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { LogClient } from "../../src/client/log-client.js";
import { startJoinTokenAgentCore } from "../helpers/agent-core.js";
import { runCli } from "../helpers/cli.js";
import { waitFor } from "../helpers/kept-alive.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 12, phase 3: the agent keeps the receipt of its node SVID's issuance beside it in its
 * data directory, and the auditor's CLI finds it there (--svid) and checks it is about that SVID.
 */
const NODE = "spiffe://example.org/node/agent-receipt";
let server: TestServer;
let core: AgentCore | undefined;
const data = tempDir("agent-receipt");
const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));

beforeAll(async () => {
  server = await startTestServer({ overrides: { transparency: { checkpointInterval: 0.3, integrationBatch: 50 } } });
});
afterAll(async () => {
  await core?.close();
  await server?.destroy();
  data.remove();
});

describe("the agent's node SVID receipt", () => {
  it("is written beside the node SVID once a checkpoint covers it, and verifies for that SVID", async () => {
    core = await startJoinTokenAgentCore(server, NODE, data.path);
    const bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
    const receipt = join(data.path, "receipt.json");
    await waitFor(() => existsSync(receipt), "the node SVID's receipt", 20_000);
    const logKey = await new LogClient(server.url, { trustBundlePem: bundle }).verifierKey();
    const r = await runCli(["log", "verify-inclusion", "--svid", join(data.path, "svid.pem"), "--key", logKey]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`attest success ${NODE}`);
    expect((JSON.parse(readFileSync(receipt, "utf8")) as { index: number }).index).toBeGreaterThanOrEqual(0);
  });
});
