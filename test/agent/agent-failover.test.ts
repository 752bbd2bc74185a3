import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { WorkloadApiClient } from "../../src/workload-api/client.js";
import { closedPort } from "../helpers/dead-servers.js";
import { adminSocketOf } from "../helpers/server.js";
import { type ServerProcess, startServerProcess } from "../helpers/server-process.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 13, item 4 (the agent): `hallmark agent --server DEAD,GOOD` attests and serves through
 * the server that answers; when that server is killed (SIGKILL) and started again on the same
 * address, the same agent process picks up entries created afterwards, without a restart.
 */
const BIN = fileURLToPath(new URL("../../bin/hallmark.js", import.meta.url));
const NODE = "spiffe://example.org/node/failover-agent";
const work = tempDir("agent-failover");
const serverData = join(work.path, "server");
const agentData = join(work.path, "agent");
const socketPath = join(work.path, "agent.sock");
const bundleFile = join(work.path, "bundle.pem");
let server: ServerProcess | undefined;
let listen: string;
let dead: string;
let agent: ChildProcess | undefined;
let agentLog = "";

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(adminSocketOf(serverData), method, path, body));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; agent log:\n${agentLog.slice(-3000)}`);
    await sleep(200);
  }
}

/** The SPIFFE IDs the agent hands this process (root, uid 0) right now. */
async function servedIds(): Promise<string[]> {
  const c = new WorkloadApiClient(socketPath);
  try {
    return (await c.fetchX509()).map((s) => s.spiffeId).sort();
  } finally {
    c.close();
  }
}

async function startServer(): Promise<void> {
  server = startServerProcess(serverData, { args: ["--listen", listen] });
  await server.ready;
}

beforeAll(async () => {
  // A fixed address, so that the server comes back where the agent looks for it.
  listen = `127.0.0.1:${await closedPort()}`;
  dead = `https://127.0.0.1:${await closedPort()}`;
  await startServer();
  writeFileSync(bundleFile, ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem);
}, 60_000);
afterAll(async () => {
  agent?.kill("SIGKILL");
  await server?.stop("SIGKILL");
  work.remove();
});

it("attests and serves through the server that answers, and recovers by itself when that server is killed and started again", async () => {
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
  await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/before", selectors: ["unix:uid:0"] });
  agent = spawn(
    process.execPath,
    [BIN, "agent", "--server", `${dead},https://${listen}`, "--trust-bundle", bundleFile, "--data-dir", agentData, "--socket", socketPath, "--poll-interval", "1s", "--join-token", token],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  agent.stdout!.on("data", (d: Buffer) => (agentLog += d.toString()));
  agent.stderr!.on("data", (d: Buffer) => (agentLog += d.toString()));
  const pid = agent.pid;

  await until("the agent to serve", async () => (agentLog.includes("agent: serving the Workload API") && existsSync(socketPath) ? true : undefined));
  expect(await until("the first entry's SVID", async () => ((await servedIds()).length === 1 ? servedIds() : undefined))).toEqual(["spiffe://example.org/before"]);
  // One warning for the dead server, on the first call; every later call went to the one that answered.
  const failovers = agentLog.split("\n").filter((l) => l.includes("a server could not be reached"));
  expect(failovers).toHaveLength(1);
  expect(JSON.parse(failovers[0]!)).toMatchObject({ failed: [`${dead} (ECONNREFUSED)`], answeredBy: `https://${listen}` });

  // kill -9 the only live server: the agent keeps serving what it holds...
  await server!.stop("SIGKILL");
  expect(await servedIds()).toEqual(["spiffe://example.org/before"]);
  const logBeforeRestart = agentLog.length;
  await until("the agent to notice the server is gone", async () => (/cannot reach the servers: /.test(agentLog.slice(logBeforeRestart)) ? true : undefined));
  // ...and, with the server back on the same address, picks up what is new without a restart.
  await startServer();
  await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/after", selectors: ["unix:uid:0"] });
  expect(await until("the entry created after the restart", async () => ((await servedIds()).length === 2 ? servedIds() : undefined), 30_000)).toEqual([
    "spiffe://example.org/after",
    "spiffe://example.org/before",
  ]);
  expect(agent.pid).toBe(pid);
  expect(agent.exitCode).toBeNull();
}, 90_000);
