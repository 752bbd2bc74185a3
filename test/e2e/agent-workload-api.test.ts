import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { X509Certificate } from "node:crypto";
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from "jose";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { WorkloadApiClient } from "../../src/workload-api/client.js";
import { NOBODY } from "../helpers/as-user.js";
import { run } from "../helpers/cli.js";
import { hasPythonGrpc, NO_PYTHON_GRPC, pythonFetchX509As } from "../helpers/python-workload-client.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 9 end to end: the real `hallmark agent` process attests with a join token, serves the
 * Workload API on its socket, hands an entry's identity to the uid its selector names (python3-grpcio
 * as uid nobody, an independent client) and not to another uid, rotates it by itself, survives
 * kill -9 without the join token, and stops serving when the node is evicted.
 */
const BIN = fileURLToPath(new URL("../../bin/hallmark.js", import.meta.url));
const X509_TTL = 8;
const NODE_ID = "spiffe://example.org/node/agent-host";
const NOBODY_ID = "spiffe://example.org/billing";
const ROOT_ID = "spiffe://example.org/ops";

const work = tempDir("agent-e2e");
const dataDir = join(work.path, "agent");
const socketPath = join(work.path, "run", "agent.sock");
const bundleFile = join(work.path, "bundle.pem");
let server: TestServer;
let agent: ChildProcess | undefined;
let agentLog = "";

beforeAll(async () => {
  // uid nobody must reach the socket and the python client's files.
  chmodSync(work.path, 0o755);
  server = await startTestServer({
    overrides: { svid: { nodeTtl: 3600, x509Ttl: X509_TTL, jwtTtl: 60, maxTtl: 86400, nodeRenewalOverlap: 30 } },
  });
  writeFileSync(bundleFile, ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem);
});
afterAll(async () => {
  await stopAgent("SIGTERM");
  await server?.destroy();
  work.remove();
});

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; agent log:\n${agentLog.slice(-3000)}`);
    await sleep(200);
  }
}

function startAgent(extra: string[]): ChildProcess {
  agentLog = "";
  const child = spawn(
    process.execPath,
    [BIN, "agent", "--server", server.url, "--trust-bundle", bundleFile, "--data-dir", dataDir, "--socket", socketPath, "--poll-interval", "1s", ...extra],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stdout!.on("data", (d: Buffer) => (agentLog += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (agentLog += d.toString()));
  agent = child;
  return child;
}

async function stopAgent(signal: NodeJS.Signals): Promise<number | null> {
  const child = agent;
  agent = undefined;
  if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill(signal);
  return exited;
}

const serving = () => until("the agent to serve its socket", async () => (agentLog.includes("agent: serving the Workload API") && existsSync(socketPath) ? true : undefined));

/** What the agent hands this process (root) right now: the first FetchX509SVID message. */
async function asRoot<T>(work: (c: WorkloadApiClient) => Promise<T>): Promise<T> {
  const c = new WorkloadApiClient(socketPath);
  try {
    return await work(c);
  } finally {
    c.close();
  }
}

describe("hallmark agent and the SPIFFE Workload API", () => {
  it("attests with a join token, keeps its key 0600, and serves the socket", async () => {
    const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: NODE_ID, ttl_seconds: 600 })) as { token: string };
    startAgent(["--join-token", token]);
    await serving();
    expect(statSync(join(dataDir, "svid.key")).mode & 0o777).toBe(0o600);
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    expect(statSync(socketPath).isSocket()).toBe(true);
  });

  it("gives an entry's identity, within seconds of `entry create`, to the uid its selector names and to no other", async () => {
    await admin("POST", "/admin/entries", { parent_id: NODE_ID, spiffe_id: NOBODY_ID, selectors: ["unix:uid:65534"] });
    await admin("POST", "/admin/entries", { parent_id: NODE_ID, spiffe_id: ROOT_ID, selectors: ["unix:uid:0"] });
    const created = Date.now();
    const svids = await until("root's identity", () => asRoot((c) => c.fetchX509()));
    console.warn(`measured: entry create → SVID on the socket in ${Date.now() - created} ms`);
    expect(svids.map((s) => s.spiffeId)).toEqual([ROOT_ID]);
    const leaf = new X509Certificate(svids[0]!.certChain[0]!);
    expect(leaf.subjectAltName).toBe(`URI:${ROOT_ID}`);
    expect(leaf.verify(new X509Certificate(svids[0]!.bundle[0]!).publicKey)).toBe(true);

    if (!hasPythonGrpc) {
      console.warn(`skipping the uid-nobody half: ${NO_PYTHON_GRPC}`);
      return;
    }
    const py = join(work.path, "python");
    mkdirSync(py, { mode: 0o755, recursive: true });
    const nobody = await pythonFetchX509As(NOBODY, socketPath, py);
    expect(nobody.stdout.trim(), nobody.stderr).toBe(NOBODY_ID);
    const pem = async (name: string) => {
      await run("openssl", ["x509", "-inform", "DER", "-in", join(nobody.out, `${name}.der`), "-out", join(nobody.out, `${name}.pem`)]);
      return join(nobody.out, `${name}.pem`);
    };
    expect((await run("openssl", ["verify", "-CAfile", await pem("bundle"), await pem("svid")])).stdout).toContain(": OK");
    const stranger = await pythonFetchX509As({ uid: 4242, gid: 4242 }, socketPath, py);
    expect(stranger.stdout.trim()).toBe("PERMISSION_DENIED");
  });

  it("hands out JWT-SVIDs that jose verifies against the JWT bundle from the socket", async () => {
    const [jwt] = await asRoot((c) => c.fetchJwt(["https://api.example.org"]));
    const bundles = await asRoot((c) => c.fetchJwtBundles());
    const jwks = bundles.get("spiffe://example.org") as JSONWebKeySet;
    // jose takes only keys without `use` or with use "sig"; the SPIFFE bundle marks them jwt-svid.
    const keys = { keys: jwks.keys.map(({ use: _use, ...k }) => k) } as JSONWebKeySet;
    const { payload } = await jwtVerify(jwt!.token, createLocalJWKSet(keys), { audience: "https://api.example.org" });
    expect(payload.sub).toBe(ROOT_ID);
    expect((await asRoot((c) => c.validateJwt(jwt!.token, "https://api.example.org"))).spiffeId).toBe(ROOT_ID);
  });

  it("hands out WIT-SVIDs bound to a key it made for the workload, verified against the WIT bundle", async () => {
    const [wit] = await asRoot((c) => c.fetchWit());
    expect(wit!.spiffeId).toBe(ROOT_ID);
    const jwks = (await asRoot((c) => c.fetchWitBundles())).get("spiffe://example.org") as JSONWebKeySet;
    expect(jwks.keys.length).toBeGreaterThan(0);
    expect(jwks.keys.every((k) => k.use === "wit-svid")).toBe(true);
    const keys = { keys: jwks.keys.map(({ use: _use, ...k }) => k) } as JSONWebKeySet;
    const { payload, protectedHeader } = await jwtVerify(wit!.token, createLocalJWKSet(keys), { typ: "wit+jwt" });
    expect(payload.sub).toBe(ROOT_ID);
    const { d: _d, ...publicHalf } = wit!.privateKeyJwk;
    expect((payload.cnf as { jwk: Record<string, unknown> }).jwk).toEqual(publicHalf);
    expect(protectedHeader.kid).toBeTruthy();
  });

  it("rotates the SVID on an open stream before it expires, with no action from anyone", async () => {
    const c = new WorkloadApiClient(socketPath);
    try {
      const first = (await c.fetchX509())[0]!;
      const firstLeaf = new X509Certificate(first.certChain[0]!);
      const renewed = await until(
        "a renewed SVID",
        async () => {
          const now = (await c.fetchX509())[0]!;
          return now.certChain[0]!.equals(first.certChain[0]!) ? undefined : now;
        },
        (X509_TTL + 5) * 1000,
      );
      const renewedLeaf = new X509Certificate(renewed.certChain[0]!);
      expect(renewedLeaf.serialNumber).not.toBe(firstLeaf.serialNumber);
      // The new one arrived while the old one was still valid.
      expect(Date.parse(renewedLeaf.validFrom)).toBeLessThan(Date.parse(firstLeaf.validTo));
      expect(Date.now()).toBeLessThan(Date.parse(firstLeaf.validTo));
    } finally {
      c.close();
    }
  });

  it("survives kill -9: restarted without the join token, it serves again", async () => {
    expect(await stopAgent("SIGKILL")).toBeNull();
    startAgent([]);
    await serving();
    expect(agentLog).toContain("agent: reusing the stored node SVID");
    expect((await until("root's identity after the restart", () => asRoot((c) => c.fetchX509())))[0]!.spiffeId).toBe(ROOT_ID);
  });

  it("stops serving at once when the node is evicted, says why, and exits 1", async () => {
    const child = agent!;
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    await admin("POST", "/admin/nodes/evict", { spiffe_id: NODE_ID });
    expect(await exited).toBe(1);
    expect(agentLog).toMatch(/node_evicted/);
    await expect(asRoot((c) => c.fetchX509())).rejects.toMatchObject({ code: "unavailable" });
  });
});
