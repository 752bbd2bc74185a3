import { attest, joinTokenProducer } from "../src/client/attest.js";
import { adminRequest, expectOk } from "../src/client/http.js";
import { NodeClient } from "../src/client/node.js";
import { type Replica, startReplicaSet } from "../test/helpers/replicas.js";
import { startServerProcess } from "../test/helpers/server-process.js";
import { tempDir } from "../test/helpers/tmp.js";
import { percentile, closedLoop, summary } from "./stats.js";

/**
 * Issue 13's figures, in one run: X.509-SVID issuance (throughput, p99) on SQLite with one
 * server, then on PostgreSQL with one and with two replicas (one database, one SoftHSM2 token,
 * the load split evenly, each client on its own replica), and the time from `entry create` on
 * replica A to the answer of an agent's long poll on replica B. The load generator runs in this
 * process on the same two cores: compare the rows with each other, not with other machines.
 * The test cluster runs with fsync off and synchronous_commit off (like SQLite's WAL with
 * synchronous=NORMAL, a commit is not flushed to disk before it is acknowledged).
 */
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

export async function run(): Promise<void> {
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
