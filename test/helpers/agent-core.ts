import { type AgentCore, startAgentCore } from "../../src/agent/run-agent.js";
import { joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { createLogger } from "../../src/log.js";
import type { TestServer } from "./server.js";

/**
 * An agent core in this process, admitted to `server` as `nodeId` with a join token the admin
 * socket made: quick polls and retries, so tests wait for it little.
 */
export async function startJoinTokenAgentCore(server: TestServer, nodeId: string, dataDir: string): Promise<AgentCore> {
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  const bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: nodeId, ttl_seconds: 600 })) as { token: string };
  return startAgentCore({
    server: server.url,
    trustBundlePem: bundle,
    dataDir,
    attestor: "join_token",
    producer: async () => joinTokenProducer(token),
    pollIntervalSeconds: 0.2,
    retry: { minMs: 100, maxMs: 500 },
    log: createLogger(process.env.HALLMARK_TEST_LOG ?? "silent"),
  });
}
