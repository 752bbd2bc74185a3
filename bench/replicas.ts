import { readFileSync } from "node:fs";
import { attest, joinTokenProducer } from "../src/client/attest.js";
import { adminRequest, expectOk } from "../src/client/http.js";
import { NodeClient } from "../src/client/node.js";
import { httpsRaw } from "../test/helpers/https.js";
import { type Replica, startReplicaSet } from "../test/helpers/replicas.js";
import { startServerProcess } from "../test/helpers/server-process.js";
import { tempDir } from "../test/helpers/tmp.js";
import { bulkFillPostgres } from "./bulk-postgres.js";
import { percentile, closedLoop, summary } from "./stats.js";

/**
 * Issue 13's figures, in one run: X.509-SVID issuance (throughput, p99) on SQLite with one
 * server, then on PostgreSQL with one and with two replicas (one database, one SoftHSM2 token,
 * the load split evenly, each client on its own replica), and the time from `entry create` on
 * replica A to the answer of an agent's long poll on replica B. The load generator runs in this
 * process on the same two cores: compare the rows with each other, not with other machines.
 * The test cluster runs with fsync off and synchronous_commit off (like SQLite's WAL with
 * synchronous=NORMAL, a commit is not flushed to disk before it is acknowledged).
 * Then the cold start of a replica on a database of COLD_ENTRIES entries and COLD_NODES nodes.
 * BENCH_PHASES=issuance or BENCH_PHASES=coldstart runs one of the two (default: both).
 */
const PHASES = (process.env.BENCH_PHASES ?? "issuance,coldstart").split(",").filter(Boolean);
const COLD_ENTRIES = Number(process.env.BENCH_COLD_ENTRIES ?? 100_000);
const COLD_NODES = Number(process.env.BENCH_COLD_NODES ?? 10_000);
/** bulk-0's share: more than one page (ENTRY_PAGE, 500), so its first page is a full one. */
const COLD_FIRST_NODE_ENTRIES = 1_000;
const COLD_NODE = "spiffe://example.org/node/bulk-0";
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const NODE = "spiffe://example.org/node/bench";
const WORKLOAD = "spiffe://example.org/bench/w";

interface Target {
  url: string;
  admin(method: string, path: string, body?: unknown): Promise<unknown>;
}

type NodeSvid = Awaited<ReturnType<typeof attest>>;

/** A node attested on `first`, with one workload entry. */
async function nodeOn(first: Target): Promise<NodeSvid> {
  const { token } = (await first.admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
  await first.admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: WORKLOAD, selectors: [] });
  const { bundle_pem: trustBundlePem } = (await first.admin("GET", "/admin/bundle")) as { bundle_pem: string };
  return attest({ server: first.url, tls: { trustBundlePem }, producer: joinTokenProducer(token) });
}

/** The node's client of one server. */
const clientOn = (t: Target, svid: NodeSvid) => new NodeClient([t.url], { trustBundlePem: svid.bundlePem, certPem: svid.certChainPem, keyPem: svid.privateKeyPem });

/** The load split evenly over the clients (each keeps CONCURRENCY / n requests in flight). */
async function issuance(label: string, clients: NodeClient[]): Promise<void> {
  let next = 0;
  await closedLoop(() => clients[next++ % clients.length]!.fetchX509(WORKLOAD), CONCURRENCY, 1); // warm-up
  next = 0;
  const m = await closedLoop(() => clients[next++ % clients.length]!.fetchX509(WORKLOAD), CONCURRENCY, SECONDS);
  console.log(summary(label, m));
}

/** Entry created on A -> answer of a long poll held by B, 20 times. */
async function propagation(a: Replica, onB: NodeClient): Promise<void> {
  const delays: number[] = [];
  for (let i = 0; i < 20; i++) {
    const { revision } = await onB.entries({});
    const poll = onB.entries({ since: revision, waitSeconds: 15 });
    await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    await a.admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: `spiffe://example.org/bench/p${i}`, selectors: [] });
    await poll;
    delays.push(performance.now() - t0);
  }
  delays.sort((x, y) => x - y);
  console.log(`${"entry create on A -> long poll answered on B (20 times)".padEnd(58)}  p50 ${percentile(delays, 50).toFixed(2)} ms  max ${delays.at(-1)!.toFixed(2)} ms`);
}

/** A process's peak resident set (VmHWM), in MiB. */
function peakRssMiB(pid: number): number {
  const kb = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb) / 1024;
}

/**
 * A replica started on a database that already holds COLD_ENTRIES entries and COLD_NODES nodes
 * (and its CA keys: a first replica made them, then stopped, as when a replica joins a running
 * deployment): seconds from spawn to /readyz 200, its peak RSS, and one node's first entries page.
 */
async function coldStart(): Promise<void> {
  const set = await startReplicaSet("bench-coldstart");
  try {
    const seed = await set.start("seed");
    await seed.process.stop();
    const f0 = performance.now();
    await bulkFillPostgres(set.dbUrl, { nodes: COLD_NODES, entries: COLD_ENTRIES, firstNodeEntries: COLD_FIRST_NODE_ENTRIES });
    const fillS = (performance.now() - f0) / 1000;
    const t0 = performance.now();
    const cold = await set.start("cold");
    while ((await httpsRaw(`${cold.url}/readyz`).catch(() => ({ status: 0 }))).status !== 200) await new Promise((r) => setTimeout(r, 20));
    const readyS = (performance.now() - t0) / 1000;
    const rssReady = peakRssMiB(cold.process.pid);
    // bulk-0 attests (its row is replaced, as a re-attestation does) and reads its first page.
    const { token } = (await cold.admin("POST", "/admin/tokens", { spiffe_id: COLD_NODE, ttl_seconds: 600 })) as { token: string };
    const { bundle_pem: trustBundlePem } = (await cold.admin("GET", "/admin/bundle")) as { bundle_pem: string };
    const svid = await attest({ server: cold.url, tls: { trustBundlePem }, producer: joinTokenProducer(token) });
    const p0 = performance.now();
    const page = await clientOn(cold, svid).entries({});
    const pageMs = performance.now() - p0;
    if (!page.full || page.entries.length === 0) throw new Error("bulk-0's first page is empty: the bulk fill is not what the store reads");
    const rssServed = peakRssMiB(cold.process.pid);
    const label = `cold start, PostgreSQL, ${COLD_ENTRIES.toLocaleString("en")} entries, ${COLD_NODES.toLocaleString("en")} nodes`;
    console.log(`${label.padEnd(58)}  spawn -> /readyz 200 ${readyS.toFixed(2)} s  peak RSS ${rssReady.toFixed(0)} MiB (filled in ${fillS.toFixed(1)} s)`);
    console.log(`${`first GET /v1/node/entries page (${page.entries.length} entries)`.padEnd(58)}  ${pageMs.toFixed(1)} ms  peak RSS after it ${rssServed.toFixed(0)} MiB`);
  } finally {
    await set.destroy();
  }
}

export async function run(): Promise<void> {
  if (PHASES.includes("issuance")) await issuanceAndPropagation();
  if (PHASES.includes("coldstart")) await coldStart();
}

async function issuanceAndPropagation(): Promise<void> {
  // SQLite, one server.
  const dir = tempDir("bench-sqlite");
  const sqlite = startServerProcess(dir.path);
  try {
    await sqlite.ready;
    const m = /listening on (https:\/\/\S+) \(admin socket (\S+)\)/.exec(sqlite.stderr())!;
    const target = { url: m[1]!, admin: async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(m[2]!, method, path, body)) };
    await issuance(`x509 issuance, SQLite, 1 server (c=${CONCURRENCY})`, [clientOn(target, await nodeOn(target))]);
  } finally {
    await sqlite.stop();
    dir.remove();
  }
  // PostgreSQL, one then two replicas on the same database and token.
  const set = await startReplicaSet("bench-replicas");
  try {
    const a = await set.start("a");
    const svid = await nodeOn(a);
    const onA = clientOn(a, svid);
    await issuance(`x509 issuance, PostgreSQL, 1 replica (c=${CONCURRENCY})`, [onA]);
    const b = await set.start("b");
    const onB = clientOn(b, svid);
    await issuance(`x509 issuance, PostgreSQL, 2 replicas (c=${CONCURRENCY})`, [onA, onB]);
    await propagation(a, onB);
  } finally {
    await set.destroy();
  }
}
