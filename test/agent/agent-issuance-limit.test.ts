import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import type { AgentCore } from "../../src/agent/run-agent.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { MIN_ISSUANCE_BURST } from "../../src/config/server.js";
import { AUDIT_EVENTS } from "../../src/service/audit-events.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { toGrpcError } from "../../src/workload-api/grpc-status.js";
import { startJoinTokenAgentCore } from "../helpers/agent-core.js";
import { waitFor } from "../helpers/kept-alive.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * The agent core against a real server whose per-node issuance allowance (limits.issuanceRate) is
 * the smallest there is and does not refill within the test: the JWT-SVIDs past it are refused by
 * the server with 429, and the workload sees RESOURCE_EXHAUSTED (rate_limited), while what the
 * agent holds is still served.
 */
const NODE = "spiffe://example.org/node/agent-limited";
const WORKLOAD = "spiffe://example.org/agent-limited/w";
const SELECTORS = ["unix:uid:1007"];
const data = tempDir("agent-issuance-limit");
let server: TestServer;
let core: AgentCore;

beforeAll(async () => {
  server = await startTestServer({ overrides: { limits: { issuanceRate: { perSecond: 0.001, burst: MIN_ISSUANCE_BURST, trackedNodes: 16 } } } });
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  core = await startJoinTokenAgentCore(server, NODE, data.path);
  const entry = (await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: WORKLOAD, selectors: SELECTORS })) as { id: string };
  await waitFor(() => core.entries.entries.has(entry.id), "the entry to reach the agent", 10_000);
  // The agent fetches the entry's X509-SVID on its own: tokens of the same bucket.
  await vi.waitFor(async () => expect(await core.identities.x509Svids(SELECTORS)).toHaveLength(1), { timeout: 10_000, interval: 50 });
}, 60_000);

/** The SVIDs the server issued to this node's workloads: what its bucket has spent. */
async function workloadIssuances(): Promise<number> {
  const store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
  try {
    const kinds: string[] = [AUDIT_EVENTS.issueX509, AUDIT_EVENTS.issueJwt, AUDIT_EVENTS.issueWit];
    return (await store.audit.list(0, 100_000)).filter((r) => r.actor === NODE && r.outcome === "success" && kinds.includes(r.event)).length;
  } finally {
    await store.close();
  }
}

afterAll(async () => {
  await core?.close();
  await server?.destroy();
  data.remove();
});

it("passes the server's 429 to the workload as RESOURCE_EXHAUSTED, and keeps serving what it holds", async () => {
  // New audiences one after another until the server refuses one: the agent's own X.509 fetches
  // (which may still run beside these) and these JWT-SVIDs share the node's bucket.
  const held: Array<{ token: string }> = [];
  let refused: unknown;
  while (refused === undefined && held.length <= MIN_ISSUANCE_BURST) {
    try {
      const [svid] = await core.identities.jwtSvids(SELECTORS, [`aud-${held.length}`]);
      expect(svid?.spiffeId).toBe(WORKLOAD);
      held.push(svid!);
    } catch (e) {
      refused = e;
    }
  }
  expect(refused).toMatchObject({ code: "rate_limited" });
  expect(toGrpcError(refused, undefined)).toMatchObject({ code: status.RESOURCE_EXHAUSTED });
  // Exactly the burst was issued to the node's workloads, nothing past it.
  await vi.waitFor(async () => expect(await workloadIssuances()).toBe(MIN_ISSUANCE_BURST), { timeout: 5_000, interval: 100 });
  expect(held.length).toBeGreaterThan(MIN_ISSUANCE_BURST - 5);

  // Cached tokens need nothing from the server.
  expect((await core.identities.jwtSvids(SELECTORS, ["aud-0"]))[0]?.token).toBe(held[0]!.token);
  expect(await core.identities.x509Svids(SELECTORS)).toHaveLength(1);
});
