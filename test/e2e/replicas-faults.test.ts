import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { isHallmarkError } from "../../src/errors.js";
import { NodeClient } from "../../src/client/node.js";
import { normalizeSerial } from "../../src/service/ports.js";
import { httpsRaw } from "../helpers/https.js";
import { type Replica, type ReplicaSet, startReplicaSet } from "../helpers/replicas.js";

/**
 * Issue 13, faults on real processes: two `hallmark server` replicas on one PostgreSQL (commits
 * durable, so a crash of the database loses nothing acknowledged) and one SoftHSM2 token, a
 * client issuing X.509-SVIDs as fast as it can through both (`--server A,B`).
 * (a) kill -9 of the replica the client uses: issuance goes on through the other; afterwards no
 *     serial twice, every SVID received is recorded and audited, and the audit chain verifies.
 * (b) PostgreSQL killed (pg_ctl stop -m immediate) and started again under that load: both
 *     replicas not ready while it is gone, ready again by themselves, nothing acknowledged lost.
 */
const NODE = "spiffe://example.org/node/fault-client";
const WORKLOAD = "spiffe://example.org/fault-workload";
let set: ReplicaSet;
let a: Replica;
let b: Replica;
let client: NodeClient;

/** Every SVID the client got back, and what failed, while `running`. */
interface Load {
  serials: string[];
  failures: Map<string, number>;
  stop(): Promise<void>;
}
function issueAsFastAsPossible(workers = 4): Load {
  const serials: string[] = [];
  const failures = new Map<string, number>();
  let running = true;
  const work = async () => {
    while (running) {
      try {
        serials.push((await client.fetchX509(WORKLOAD)).serial);
      } catch (e) {
        const code = isHallmarkError(e) ? e.code : String(e);
        failures.set(code, (failures.get(code) ?? 0) + 1);
        // The caller's own backoff: every replica failed this one request.
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  const all = Promise.all(Array.from({ length: workers }, work));
  return {
    serials,
    failures,
    stop: async () => {
      running = false;
      await all;
    },
  };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const readyz = async (r: Replica) => (await httpsRaw(`${r.url}/readyz`).catch(() => ({ status: 0 }))).status;
async function until(r: Replica, status: number): Promise<number> {
  let seen = 0;
  for (let i = 0; i < 200 && seen !== status; i++) {
    seen = await readyz(r);
    if (seen !== status) await sleep(100);
  }
  return seen;
}
/** The serials of `received` that the database lacks in issued_svids, and in successful audit records. */
async function missing(received: string[]): Promise<{ svids: string[]; audit: string[] }> {
  const svids = new Set((await set.query<{ serial: string }>("SELECT serial FROM issued_svids")).map((r) => r.serial));
  const audited = new Set((await set.query<{ serial: string }>("SELECT serial FROM audit_log WHERE outcome = 'success' AND serial IS NOT NULL")).map((r) => r.serial));
  // issued_svids keys serials as request-time lookups spell them (normalizeSerial: no leading zeros).
  return { svids: received.filter((s) => !svids.has(normalizeSerial(s))), audit: received.filter((s) => !audited.has(s)) };
}

beforeAll(async () => {
  set = await startReplicaSet("replica-faults", { durableCommits: true });
  a = await set.start("a");
  b = await set.start("b");
  const { token } = (await a.admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
  await a.admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: WORKLOAD, selectors: [] });
  const { bundle_pem: trustBundlePem } = (await a.admin("GET", "/admin/bundle")) as { bundle_pem: string };
  const svid = await attest({ server: [a.url, b.url], tls: { trustBundlePem }, producer: joinTokenProducer(token) });
  client = new NodeClient([a.url, b.url], { trustBundlePem: svid.bundlePem, certPem: svid.certChainPem, keyPem: svid.privateKeyPem });
}, 60_000);
afterAll(async () => {
  await set?.destroy();
});

describe("faults under full-speed issuance through two replicas", () => {
  it("(a) kill -9 of one replica: issuance goes on through the other, nothing duplicated or lost, the audit chain intact", async () => {
    const load = issueAsFastAsPossible();
    await sleep(1500);
    const beforeKill = load.serials.length;
    await a.process.stop("SIGKILL");
    const afterKill = load.serials.length;
    await sleep(2000);
    await load.stop();
    console.warn(`kill -9: ${beforeKill} SVIDs before, ${load.serials.length - afterKill} after the kill; failures: ${JSON.stringify(Object.fromEntries(load.failures))}`);
    expect(beforeKill).toBeGreaterThan(0);
    expect(load.serials.length).toBeGreaterThan(afterKill);
    // Connection failures go to B within the same request: the caller saw no failure at all.
    expect([...load.failures.keys()]).toEqual([]);
    expect(new Set(load.serials).size).toBe(load.serials.length);
    expect(await missing(load.serials)).toEqual({ svids: [], audit: [] });
    // Nothing half-written: an SVID record and its audit record commit in one transaction, so the
    // kill leaves no SVID recorded without its audit record (it did before that write was one).
    const audited = new Set((await set.query<{ serial: string }>("SELECT serial FROM audit_log WHERE outcome = 'success' AND serial IS NOT NULL")).map((r) => normalizeSerial(r.serial)));
    const unaudited = (await set.query<{ serial: string }>("SELECT serial FROM issued_svids")).filter((r) => !audited.has(r.serial));
    expect(unaudited).toEqual([]);
    expect(await b.admin("GET", "/admin/audit/verify")).toMatchObject({ ok: true });
    // A comes back on the same database and token as if nothing happened.
    a = await set.start("a");
    expect(await readyz(a)).toBe(200);
  }, 40_000);

  it("(b) PostgreSQL killed and started again under load: not ready while it is gone, ready again by themselves, nothing acknowledged lost", async () => {
    const load = issueAsFastAsPossible();
    await sleep(1000);
    set.cluster.kill();
    expect(await until(a, 503)).toBe(503);
    expect(await until(b, 503), b.process.stderr()).toBe(503);
    const duringOutage = load.serials.length;
    await sleep(1000);
    set.cluster.start();
    expect(await until(a, 200)).toBe(200);
    expect(await until(b, 200)).toBe(200);
    const atRecovery = load.serials.length;
    await sleep(1500);
    await load.stop();
    console.warn(
      `postgres restart: ${duringOutage} SVIDs before, ${load.serials.length - atRecovery} after; failures: ${JSON.stringify(Object.fromEntries(load.failures))}`,
    );
    expect(load.serials.length).toBeGreaterThan(atRecovery);
    // Refusals during the outage say why (503 store_unavailable from both), nothing else.
    expect([...load.failures.keys()].filter((c) => c !== "store_unavailable")).toEqual([]);
    expect(new Set(load.serials).size).toBe(load.serials.length);
    expect(await missing(load.serials)).toEqual({ svids: [], audit: [] });
    expect(await b.admin("GET", "/admin/audit/verify")).toMatchObject({ ok: true });
  }, 40_000);
});
