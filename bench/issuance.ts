import "reflect-metadata";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { attest, joinTokenProducer } from "../src/client/attest.js";
import { newClientKey } from "../src/client/csr.js";
import { ApiClient, adminRequest, expectOk } from "../src/client/http.js";
import { rawSignRate } from "./hsm-raw.js";
import { BENCH_NODE_ARGS, processCpuSeconds, startBenchServer } from "./server-process.js";
import { closedLoop, openLoop, summary } from "./stats.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
/** Entries added to the node for the second X.509 phase: issuance cost must not grow with them (issue 10). */
const NODE_ENTRIES = Number(process.env.BENCH_NODE_ENTRIES ?? 10_000);
const WORKLOAD_ID = "spiffe://example.org/bench/w";

/**
 * X.509- and JWT-SVID issuance over HTTPS with keep-alive from an mTLS-authenticated node,
 * against `hallmark server` in its own process (so client and server don't share an event
 * loop), next to the raw PKCS#11 ECDSA P-256 sign rate of the same SoftHSM2 token.
 */
export async function run(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "hallmark-bench-"));
  const server = await startBenchServer(dataDir, BENCH_NODE_ARGS);
  try {
    const url = server.url;
    const socket = server.adminSocket;

    // Baseline first, on the same token, while the server idles.
    const raw = await rawSignRate({
      softhsmConf: join(dataDir, "softhsm", "softhsm2.conf"),
      tokenLabel: "hallmark",
      pin: readFileSync(join(dataDir, "softhsm", "user.pin"), "utf8").trim(),
      seconds: SECONDS,
    });

    const nodeId = "spiffe://example.org/bench/node";
    const { token } = expectOk(await adminRequest(socket, "POST", "/admin/tokens", { spiffe_id: nodeId, ttl_seconds: 600 })) as { token: string };
    expectOk(
      await adminRequest(socket, "POST", "/admin/entries", { parent_id: nodeId, spiffe_id: WORKLOAD_ID, selectors: ["bench:w"] }),
    );
    const { bundle_pem: bundlePem } = expectOk(await adminRequest(socket, "GET", "/admin/bundle")) as { bundle_pem: string };
    const node = await attest({ server: url, tls: { trustBundlePem: bundlePem }, producer: joinTokenProducer(token) });
    // 16 connections, opened during warm-up: the measured phases never pay for a TLS handshake.
    const client = new ApiClient(new URL(url), { trustBundlePem: bundlePem, certPem: node.certChainPem, keyPem: node.privateKeyPem, maxSockets: 16 });

    // The client's keys and CSRs are made up front: the server does all its work on each call.
    const csrs = await Promise.all(Array.from({ length: 64 }, () => newClientKey().then((k) => k.csrPem)));
    let i = 0;
    const x509 = async () => {
      // Named, as the agent names it: the lookup is by (node, SPIFFE ID).
      const r = await client.request("POST", "/v1/svids/x509", { csr: csrs[i++ % csrs.length], spiffe_id: WORKLOAD_ID });
      if (r.status !== 200) throw new Error(`x509 issuance failed: ${r.status} ${JSON.stringify(r.body)}`);
    };
    const jwt = async () => {
      const r = await client.request("POST", "/v1/svids/jwt", { audience: ["bench"], spiffe_id: WORKLOAD_ID });
      if (r.status !== 200) throw new Error(`jwt issuance failed: ${r.status}`);
    };
    await closedLoop(x509, 16, 1); // warm-up: TLS sessions, JIT

    const cpu0 = processCpuSeconds(server.pid);
    const x509Peak = await closedLoop(x509, 16, SECONDS);
    const serverCpu = processCpuSeconds(server.pid) - cpu0;
    const jwtPeak = await closedLoop(jwt, 16, SECONDS);
    const half = (x509Peak.ops / x509Peak.seconds) / 2;
    const x509Half = await openLoop(x509, half, SECONDS);

    console.log("\n== SVID issuance over HTTPS (mTLS node, keep-alive), one server process");
    console.log(summary("baseline: raw pkcs11js C_Sign ECDSA P-256 (same token)", raw.measured));
    console.log(summary("X.509-SVID issuance, 16 in flight (peak)", x509Peak));
    console.log(summary("JWT-SVID issuance, 16 in flight (peak)", jwtPeak));
    console.log(summary(`X.509-SVID issuance at ${half.toFixed(0)}/s offered (half of peak)`, x509Half));
    const ratio = x509Peak.ops / x509Peak.seconds / raw.perSecond;
    console.log(
      `server process CPU during the X.509 peak: ${((serverCpu / x509Peak.seconds) * 100).toFixed(0)}% of one core, ` +
        `${((serverCpu / x509Peak.ops) * 1000).toFixed(2)} ms per issuance (capacity of one server core: ${(x509Peak.ops / serverCpu).toFixed(0)}/s)`,
    );
    console.log(`X.509-SVID peak / raw sign rate: ${(ratio * 100).toFixed(1)}% (target >= 25%)`);

    if (NODE_ENTRIES > 0) {
      // The same node with NODE_ENTRIES more entries: issuance must cost what it cost with one.
      const t = performance.now();
      let made = 0;
      const addEntry = async () => {
        for (let n = made++; n < NODE_ENTRIES; n = made++) {
          expectOk(await adminRequest(socket, "POST", "/admin/entries", { parent_id: nodeId, spiffe_id: `spiffe://example.org/bench/e${n}`, selectors: [`bench:e${n}`] }));
        }
      };
      await Promise.all(Array.from({ length: 8 }, addEntry));
      console.log(`(created ${NODE_ENTRIES} more entries for the node in ${((performance.now() - t) / 1000).toFixed(1)} s)`);
      await closedLoop(x509, 16, 1);
      const cpu1 = processCpuSeconds(server.pid);
      const manyPeak = await closedLoop(x509, 16, SECONDS);
      const manyCpu = processCpuSeconds(server.pid) - cpu1;
      console.log(summary(`X.509-SVID issuance with ${NODE_ENTRIES + 1} entries on the node (peak)`, manyPeak));
      console.log(
        `server CPU per X.509 issuance: ${((serverCpu / x509Peak.ops) * 1000).toFixed(2)} ms with 1 entry, ` +
          `${((manyCpu / manyPeak.ops) * 1000).toFixed(2)} ms with ${NODE_ENTRIES + 1} (ratio ${(manyCpu / manyPeak.ops / (serverCpu / x509Peak.ops)).toFixed(2)})`,
      );
      const cpu2 = processCpuSeconds(server.pid);
      const pages = await closedLoop(async () => {
        const r = await client.request("GET", "/v1/node/entries");
        if (r.status !== 200) throw new Error(`entries failed: ${r.status}`);
      }, 1, SECONDS);
      console.log(`GET /v1/node/entries (first page of the full list): ${(((processCpuSeconds(server.pid) - cpu2) / pages.ops) * 1000).toFixed(2)} ms of server CPU each`);
    }
    client.close();
  } finally {
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
