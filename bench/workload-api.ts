import "reflect-metadata";
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { credentials, loadPackageDefinition, Metadata, type ServiceClientConstructor } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { attest, joinTokenProducer } from "../src/client/attest.js";
import { ApiClient, adminRequest, expectOk } from "../src/client/http.js";
import { WorkloadApiClient } from "../src/workload-api/client.js";
import { WORKLOAD_PROTO_OPTIONS, workloadProtoPath } from "../src/workload-api/server.js";
import { spawnAs } from "../test/helpers/as-user.js";
import { startBenchServer } from "./server-process.js";
import { closedLoop, type Measured, percentile, summary } from "./stats.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const BIN = fileURLToPath(new URL("../../bin/hallmark.js", import.meta.url));
const HOLDER = fileURLToPath(new URL("./workload-stream-holder.js", import.meta.url));
const TD = "spiffe://example.org";
const NODE_ID = `${TD}/bench/agent-node`;
const ME = process.getuid?.() ?? 0;
/** 16 uids × 63 streams: the agent's default per-uid stream limit is 64, so 1,000 streams need many uids. */
const STREAM_UIDS = Array.from({ length: 16 }, (_, i) => 30000 + i);
const STREAMS_PER_UID = 63;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resident set of a process in MiB, from /proc/PID/status (VmRSS). */
function rssMiB(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb) / 1024;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Runs `op` `n` times one after another: latency without queueing. */
async function serialCalls(op: () => Promise<unknown>, n: number): Promise<Measured> {
  const latenciesMs: number[] = [];
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await op();
    latenciesMs.push(performance.now() - t);
  }
  return { ops: n, seconds: (performance.now() - start) / 1000, latenciesMs };
}

/** A Unix-socket echo server in a process of its own: the floor under any call on a local socket. */
async function startEcho(path: string): Promise<ChildProcess> {
  const code = `require("net").createServer((s) => s.pipe(s)).listen(${JSON.stringify(path)}, () => console.log("up"))`;
  const child = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise((r) => child.stdout!.once("data", r));
  return child;
}

/** One round trip of `size` bytes over an open Unix-socket connection. */
function echoRoundTrip(s: Socket, payload: Buffer): Promise<void> {
  return new Promise((done) => {
    let got = 0;
    const onData = (d: Buffer) => {
      got += d.length;
      if (got >= payload.length) {
        s.off("data", onData);
        done();
      }
    };
    s.on("data", onData);
    s.write(payload);
  });
}

/**
 * The SPIFFE Workload API of a real `hallmark agent` process (join token, --poll-interval 1s)
 * against a real `hallmark server` process: first-message latency, JWT-SVID rate, the agent's
 * memory, and how long a new entry takes to reach an open stream, each next to its baseline.
 */
export async function run(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), "hallmark-bench-wl-"));
  chmodSync(work, 0o755); // the stream holders run as other uids
  const server = await startBenchServer(join(work, "server"));
  const children: ChildProcess[] = [];
  let agent: ChildProcess | undefined;
  try {
    const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
    const bundlePem = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
    writeFileSync(join(work, "bundle.pem"), bundlePem);
    const socket = join(work, "run", "agent.sock");
    const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: NODE_ID, ttl_seconds: 600 })) as { token: string };
    await admin("POST", "/admin/entries", { parent_id: NODE_ID, spiffe_id: `${TD}/bench/me`, selectors: [`unix:uid:${ME}`] });
    agent = spawn(
      process.execPath,
      [BIN, "agent", "--server", server.url, "--trust-bundle", join(work, "bundle.pem"), "--data-dir", join(work, "agent"), "--socket", socket, "--poll-interval", "1s", "--join-token", token, "--log-level", "warn"],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    children.push(agent);
    const agentPid = agent.pid!;
    const wl = new WorkloadApiClient(socket);
    await until("the agent to serve this uid", () => wl.fetchX509().then((s) => (s.length ? s : undefined)));
    await sleep(2000);
    const rssStart = rssMiB(agentPid);

    // (c) Memory, first with 1,008 open streams (before the load phases leave garbage in the heap);
    // with 10,000 entries for the node at the end.
    for (const uid of STREAM_UIDS) await admin("POST", "/admin/entries", { parent_id: NODE_ID, spiffe_id: `${TD}/bench/holder-${uid}`, selectors: [`unix:uid:${uid}`] });
    await sleep(2500); // one poll, and the SVIDs fetched
    const holders = STREAM_UIDS.map((uid) => spawnAs({ uid, gid: uid }, process.execPath, [HOLDER, socket, String(STREAMS_PER_UID)]));
    children.push(...holders);
    await Promise.all(
      holders.map(
        (h) =>
          new Promise<void>((done, fail) => {
            let out = "";
            h.stdout!.on("data", (d: Buffer) => {
              out += d.toString();
              if (out.includes("ready")) done();
              if (out.includes("failed")) fail(new Error(`a stream holder failed: ${out}`));
            });
            h.stderr!.on("data", (d: Buffer) => process.stderr.write(d));
          }),
      ),
    );
    await sleep(2000);
    const rssStreams = rssMiB(agentPid);
    for (const h of holders) h.kill("SIGKILL");
    await sleep(2000);
    const rssAfterStreams = rssMiB(agentPid);

    // (a) First-message latency, one call at a time, each method on a connection of its own after
    // a warm-up. Each call cancels its stream after the first message, and nghttp2 (Node's HTTP/2)
    // closes a connection whose client resets more than 1,000 streams in a burst (rapid-reset
    // protection, then 33/s): hence a fresh connection per phase.
    const latencyOf = async (call: (c: WorkloadApiClient) => Promise<unknown>): Promise<Measured> => {
      const c = new WorkloadApiClient(socket);
      try {
        await serialCalls(() => call(c), 100);
        return await serialCalls(() => call(c), 500);
      } finally {
        c.close();
      }
    };
    const x509 = await latencyOf((c) => c.fetchX509());
    const bundles = await latencyOf((c) => c.fetchX509Bundles());
    const svidBytes = (await wl.fetchX509()).reduce((n, s) => n + s.certChain.reduce((m, c) => m + c.length, 0) + s.privateKey.length + s.bundle.reduce((m, c) => m + c.length, 0), 0);
    const echo = await startEcho(join(work, "echo.sock"));
    children.push(echo);
    const es = connect(join(work, "echo.sock"));
    await new Promise((r) => es.once("connect", r));
    const payload = Buffer.alloc(svidBytes, 7);
    await serialCalls(() => echoRoundTrip(es, payload), 100);
    const raw = await serialCalls(() => echoRoundTrip(es, payload), 500);
    es.destroy();

    // (b) FetchJWTSVID, cached, 16 in flight, next to the server's own JWT issuance over HTTPS.
    await wl.fetchJwt(["bench"]);
    await closedLoop(() => wl.fetchJwt(["bench"]), 16, 1);
    const jwtAgent = await closedLoop(() => wl.fetchJwt(["bench"]), 16, SECONDS);
    const directNode = `${TD}/bench/direct-node`;
    const t2 = (await admin("POST", "/admin/tokens", { spiffe_id: directNode, ttl_seconds: 600 })) as { token: string };
    await admin("POST", "/admin/entries", { parent_id: directNode, spiffe_id: `${TD}/bench/direct`, selectors: ["bench:direct"] });
    const direct = await attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer: joinTokenProducer(t2.token) });
    const http = new ApiClient(new URL(server.url), { trustBundlePem: bundlePem, certPem: direct.certChainPem, keyPem: direct.privateKeyPem, maxSockets: 16 });
    const jwtHttp = async () => {
      const r = await http.request("POST", "/v1/svids/jwt", { audience: ["bench"] });
      if (r.status !== 200) throw new Error(`jwt issuance failed: ${r.status}`);
    };
    await closedLoop(jwtHttp, 16, 1);
    const jwtServer = await closedLoop(jwtHttp, 16, SECONDS);
    http.close();

    // (d) entry create → the SVID on an open stream (the agent polls every 1 s).
    const propagation: number[] = [];
    const pkg = loadPackageDefinition(loadSync(workloadProtoPath(), WORKLOAD_PROTO_OPTIONS));
    const grpc = new (pkg.SpiffeWorkloadAPI as ServiceClientConstructor)(`unix://${socket}`, credentials.createInsecure()) as unknown as {
      FetchX509SVID(req: object, md: Metadata): NodeJS.EventEmitter & { cancel(): void };
      close(): void;
    };
    const md = new Metadata();
    md.set("workload.spiffe.io", "true");
    for (let i = 0; i < 7; i++) {
      const stream = grpc.FetchX509SVID({}, md);
      stream.on("error", () => undefined);
      await new Promise((r) => stream.once("data", r));
      const id = `${TD}/bench/new-${i}`;
      const arrived = new Promise<void>((done) => {
        stream.on("data", (m: { svids: { spiffe_id: string }[] }) => {
          if (m.svids.some((s) => s.spiffe_id === id)) done();
        });
      });
      const t = performance.now();
      await admin("POST", "/admin/entries", { parent_id: NODE_ID, spiffe_id: id, selectors: [`unix:uid:${ME}`] });
      await arrived;
      propagation.push(performance.now() - t);
      stream.cancel();
      await sleep(Math.random() * 1000); // do not stay in phase with the agent's poll
    }
    grpc.close();

    await sleep(2000);
    const rssIdle = rssMiB(agentPid);
    const ENTRIES = 10_000;
    // What one `entry create` adds to the audit log, measured on an entry of another node (the agent ignores it).
    const auditRecords = async () => ((await admin("GET", "/admin/audit/verify")) as { records: number }).records;
    const a0 = await auditRecords();
    await admin("POST", "/admin/entries", { parent_id: `${TD}/bench/other-node`, spiffe_id: `${TD}/bench/elsewhere`, selectors: ["unix:uid:1"] });
    const perCreate = (await auditRecords()) - a0;
    const auditBefore = await auditRecords();
    const tCreate = performance.now();
    for (let i = 0; i < ENTRIES; i += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, ENTRIES - i) }, (_, j) =>
          admin("POST", "/admin/entries", { parent_id: NODE_ID, spiffe_id: `${TD}/bench/many/${i + j}`, selectors: [`unix:uid:${40000 + i + j}`] }),
        ),
      );
    }
    const createSeconds = (performance.now() - tCreate) / 1000;
    // The last entry matches this uid: once it reaches us, the agent holds all 10,000.
    const last = `${TD}/bench/many-last`;
    await admin("POST", "/admin/entries", { parent_id: NODE_ID, spiffe_id: last, selectors: [`unix:uid:${ME}`] });
    const tSync = performance.now();
    await until("the 10,000 entries on the agent", () => wl.fetchX509().then((s) => (s.some((x) => x.spiffeId === last) ? true : undefined)), 300_000);
    const syncSeconds = (performance.now() - tSync) / 1000;
    // The cache fills up to its cap in the background: wait until the server has issued nothing for 3 s.
    let settled = -1;
    for (let now = await auditRecords(); now !== settled; now = await auditRecords()) {
      settled = now;
      await sleep(3000);
    }
    const rssEntries = rssMiB(agentPid);
    // Every SVID the server issued the agent meanwhile is an audit record: how many the cache fetched.
    const fetchedForCache = (await auditRecords()) - auditBefore - (ENTRIES + 1) * perCreate;
    wl.close();
    const x509Many = await latencyOf((c) => c.fetchX509());

    const sorted = [...propagation].sort((a, b) => a - b);
    console.log("\n== SPIFFE Workload API: a real hallmark agent (poll 1 s) and server, one socket");
    console.log(summary("baseline: raw Unix-socket echo round trip, same size", raw));
    console.log(summary("baseline: FetchX509Bundles first message (cached)", bundles));
    console.log(summary("FetchX509SVID first message, cached identity", x509));
    console.log(`(one X509SVIDResponse ≈ ${svidBytes} bytes; 500 calls each, one at a time, a new stream per call)`);
    console.log(summary("baseline: server JWT-SVID issuance over HTTPS, 16 in flight", jwtServer));
    console.log(summary("FetchJWTSVID (cached JWT), 16 in flight, one connection", jwtAgent));
    console.log(
      `entry create → SVID on an open stream (poll 1 s), ${sorted.length} runs: median ${percentile(sorted, 50).toFixed(0)} ms, ` +
        `min ${sorted[0]!.toFixed(0)} ms, max ${sorted.at(-1)!.toFixed(0)} ms`,
    );
    console.log(`agent RSS idle just after start (1 entry): ${rssStart.toFixed(1)} MiB`);
    console.log(`agent RSS with ${STREAM_UIDS.length * STREAMS_PER_UID} open FetchX509SVID streams (${STREAM_UIDS.length} uids): ${rssStreams.toFixed(1)} MiB; after they closed: ${rssAfterStreams.toFixed(1)} MiB`);
    console.log(`agent RSS idle after the latency, JWT and entry phases (${propagation.length + STREAM_UIDS.length + 1} entries): ${rssIdle.toFixed(1)} MiB`);
    console.log(
      `agent RSS with ${ENTRIES} more entries for the node (created in ${createSeconds.toFixed(1)} s over the admin API, 50 at a time; ` +
        `synced in ${syncSeconds.toFixed(1)} s): ${rssEntries.toFixed(1)} MiB; SVIDs the server issued the agent meanwhile: ${fetchedForCache} (the cache holds at most 1,000 X.509-SVIDs)`,
    );
    console.log(summary(`FetchX509SVID first message with ${ENTRIES} entries on the node`, x509Many));
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    if (agent) await new Promise((r) => (agent!.exitCode !== null || agent!.signalCode !== null ? r(undefined) : agent!.once("exit", r)));
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
