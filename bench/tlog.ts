import "reflect-metadata";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuditLog } from "../src/audit/log.js";
import { attest, joinTokenProducer } from "../src/client/attest.js";
import { newClientKey } from "../src/client/csr.js";
import { ApiClient, adminRequest, expectOk } from "../src/client/http.js";
import { openPkcs11KeyStore } from "../src/hsm/pkcs11-keystore.js";
import { findSoftHsmModule } from "../src/hsm/softhsm.js";
import { openSqliteStore } from "../src/store/sqlite/index.js";
import { signCheckpoint } from "../src/transparency/checkpoint.js";
import { integrateAll } from "../src/transparency/integrator.js";
import { hashesToStore, inclusionProof, leafHash, MemoryHashStore, treeHash } from "../src/transparency/merkle.js";
import { ed25519NoteSigner } from "../src/transparency/note.js";
import { StoredHashReader } from "../src/transparency/stored-hashes.js";
import { rawSignRate } from "./hsm-raw.js";
import { startBenchServer } from "./server-process.js";
import { closedLoop, summary } from "./stats.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const LEAVES = Number(process.env.BENCH_TLOG_LEAVES ?? 1_000_000);
/** Audit records integrated for the per-leaf cost (the integrator's own work, on SQLite). */
const INTEGRATED_RECORDS = Number(process.env.BENCH_TLOG_RECORDS ?? 20_000);
const WORKLOAD_ID = "spiffe://example.org/bench/w";

function processCpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const seconds = (t: number) => ((performance.now() - t) / 1000).toFixed(2);

/**
 * The transparency log's costs (issue 12), each next to the raw HSM sign rate of the same run:
 * 1. X.509 issuance at peak against `hallmark server` (log on, as always) with the server's CPU
 *    per issuance; then the integrator's own CPU per leaf, measured alone on a SQLite store of
 *    real audit records: the log's share of an issuance is their ratio (the server has no switch
 *    to turn the log off, and should not have one just for a benchmark).
 * 2. Inclusion proofs at LEAVES leaves from the stored hashes in SQLite (p50/p99).
 * 3. Tree rebuild at LEAVES leaves: leaf hashes from entries, every subtree hash, the root.
 * 4. Checkpoint signing with an Ed25519 log key in SoftHSM2.
 */
export async function run(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "hallmark-bench-tlog-"));
  try {
    await issuance(dataDir);
    await integrationCost(dataDir);
    await proofsAndRebuild(dataDir);
    // SoftHSM2 reads its configuration once per process: the server's token again, now idle.
    await checkpointSigning(join(dataDir, "server", "softhsm"));
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

let serverMsPerIssuance = Number.NaN;

async function issuance(root: string): Promise<void> {
  const dataDir = join(root, "server");
  const server = await startBenchServer(dataDir);
  try {
    const socket = server.adminSocket;
    const raw = await rawSignRate({
      softhsmConf: join(dataDir, "softhsm", "softhsm2.conf"),
      tokenLabel: "hallmark",
      pin: readFileSync(join(dataDir, "softhsm", "user.pin"), "utf8").trim(),
      seconds: SECONDS,
    });
    const nodeId = "spiffe://example.org/bench/node";
    const { token } = expectOk(await adminRequest(socket, "POST", "/admin/tokens", { spiffe_id: nodeId, ttl_seconds: 600 })) as { token: string };
    expectOk(await adminRequest(socket, "POST", "/admin/entries", { parent_id: nodeId, spiffe_id: WORKLOAD_ID, selectors: ["bench:w"] }));
    const { bundle_pem: bundlePem } = expectOk(await adminRequest(socket, "GET", "/admin/bundle")) as { bundle_pem: string };
    const node = await attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer: joinTokenProducer(token) });
    const client = new ApiClient(new URL(server.url), { trustBundlePem: bundlePem, certPem: node.certChainPem, keyPem: node.privateKeyPem, maxSockets: 16 });
    const csrs = await Promise.all(Array.from({ length: 64 }, () => newClientKey().then((k) => k.csrPem)));
    let i = 0;
    const x509 = async () => {
      const r = await client.request("POST", "/v1/svids/x509", { csr: csrs[i++ % csrs.length], spiffe_id: WORKLOAD_ID });
      if (r.status !== 200) throw new Error(`x509 issuance failed: ${r.status}`);
    };
    await closedLoop(x509, 16, 1);
    const cpu0 = processCpuSeconds(server.pid);
    const peak = await closedLoop(x509, 16, SECONDS);
    const cpu = processCpuSeconds(server.pid) - cpu0;
    serverMsPerIssuance = (cpu / peak.ops) * 1000;
    client.close();
    console.log("\n== transparency log: X.509 issuance with the log integrating and signing (server in its own process)");
    console.log(summary("baseline: raw pkcs11js C_Sign ECDSA P-256 (same token)", raw.measured));
    console.log(summary("X.509-SVID issuance, 16 in flight (peak), log on", peak));
    console.log(`server CPU per X.509 issuance (log included): ${serverMsPerIssuance.toFixed(3)} ms`);
  } finally {
    await server.stop();
  }
}

async function integrationCost(root: string): Promise<void> {
  const store = await openSqliteStore(join(root, "integration.db"));
  try {
    const log = new AuditLog(store.audit);
    for (let n = 0; n < INTEGRATED_RECORDS; n++) {
      await log.append({ time: new Date(1_700_000_000_000 + n), event: "issue_x509", outcome: "success", actor: "spiffe://example.org/bench/node", spiffeId: WORKLOAD_ID, serial: randomBytes(16).toString("hex"), details: { n } });
    }
    // The server's own batch size; CPU of this process = the integrator's work (SQLite is synchronous here).
    const c0 = process.cpuUsage();
    const t = performance.now();
    const integrated = await integrateAll({ audit: store.audit, tree: store.transparency, batch: 1000 });
    const c = process.cpuUsage(c0);
    const msPerLeaf = (c.user + c.system) / 1000 / integrated;
    console.log(`integration of ${integrated} audit records into the SQLite tree: ${seconds(t)} s, ${msPerLeaf.toFixed(4)} ms CPU per leaf`);
    console.log(
      `the log's share of an X.509 issuance (one leaf each): ${((msPerLeaf / serverMsPerIssuance) * 100).toFixed(1)}% of its server CPU ` +
        `(issuance throughput without the log would be at most ${(100 / (1 - msPerLeaf / serverMsPerIssuance) - 100).toFixed(1)}% higher; target: the log costs <= 10%)`,
    );
  } finally {
    await store.close();
  }
}

async function proofsAndRebuild(root: string): Promise<void> {
  console.log(`\n== transparency log at ${LEAVES} leaves`);
  const leaves = Array.from({ length: LEAVES }, (_, n) => leafHash(Buffer.from(`hallmark-audit/v1\n{"event":"issue_x509","n":${n},"serial":"${n.toString(16).padStart(32, "0")}"}`)));
  // Rebuild: every stored hash and the root from the leaf entries, as audit verify recomputes it.
  let t = performance.now();
  const memory = new MemoryHashStore();
  for (let n = 0; n < LEAVES; n += 10_000) await memory.appendLeafHashes(leaves.slice(n, n + 10_000));
  const rootHash = await treeHash(LEAVES, memory);
  console.log(`tree rebuild in memory (leaf hashes given, every subtree hash, the root): ${seconds(t)} s`);
  t = performance.now();
  for (let n = 0; n < Math.min(LEAVES, 100_000); n++) leafHash(Buffer.from(`hallmark-audit/v1\n{"event":"issue_x509","n":${n},"serial":"${n.toString(16).padStart(32, "0")}","spiffeId":"${WORKLOAD_ID}"}`));
  console.log(`  plus leaf hashing of the entries: ${(((performance.now() - t) / Math.min(LEAVES, 100_000)) * LEAVES / 1000).toFixed(2)} s for ${LEAVES} (measured on 100k)`);

  // The same tree in SQLite, as the server stores it; proofs read from there.
  const store = await openSqliteStore(join(root, "proofs.db"));
  try {
    const reader = new StoredHashReader(store.transparency);
    t = performance.now();
    for (let n = 0; n < LEAVES; n += 10_000) {
      const batch = leaves.slice(n, n + 10_000);
      await store.transparency.integrate(n, n + batch.length, await hashesToStore(n, batch, reader));
    }
    console.log(`stored ${LEAVES} leaves and their subtree hashes in SQLite: ${seconds(t)} s`);
    if (!(await treeHash(LEAVES, reader)).equals(rootHash)) throw new Error("the stored tree's root differs from the rebuilt one");
    let k = 1;
    const proofs = await closedLoop(async () => {
      k = (k * 48271) % 2147483647;
      await inclusionProof(k % LEAVES, LEAVES, reader);
    }, 1, SECONDS);
    console.log(summary(`inclusion proof at ${LEAVES} leaves from SQLite, one at a time`, proofs));
  } finally {
    await store.close();
  }
}

async function checkpointSigning(softhsmDir: string): Promise<void> {
  const pin = readFileSync(join(softhsmDir, "user.pin"), "utf8").trim();
  const raw = await rawSignRate({ softhsmConf: join(softhsmDir, "softhsm2.conf"), tokenLabel: "hallmark", pin, seconds: SECONDS });
  const ks = await openPkcs11KeyStore({ modulePath: findSoftHsmModule(), tokenLabel: "hallmark", pin, sessions: 4 });
  try {
    const key = await ks.generate("bench-log", "ed25519");
    const signer = ed25519NoteSigner("example.org/hallmark-log", key);
    let size = 0;
    const sign = () => signCheckpoint({ origin: "example.org/hallmark-log", treeSize: ++size, rootHash: randomBytes(32), extensions: [] }, signer);
    console.log("\n== checkpoint signing (C2SP signed note, Ed25519 key in SoftHSM2)");
    console.log(summary("baseline: raw pkcs11js C_Sign ECDSA P-256 (same token)", raw.measured));
    console.log(summary("checkpoint signing, one at a time", await closedLoop(sign, 1, SECONDS)));
    console.log(summary("checkpoint signing, 4 in flight", await closedLoop(sign, 4, SECONDS)));
  } finally {
    await ks.close();
  }
}
