import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuditLog } from "../src/audit/log.js";
import { ApiClient, adminRequest, expectOk } from "../src/client/http.js";
import { openSqliteStore } from "../src/store/sqlite/index.js";
import { startBenchServer } from "./server-process.js";
import { percentile } from "./stats.js";

const RECORDS = Number(process.env.BENCH_AUDIT_RECORDS ?? 400_000);

/**
 * `hallmark audit verify` against a server whose log holds BENCH_AUDIT_RECORDS records (default
 * 400k, the size in issue 7), with /healthz asked over and over, one at a time, while the
 * verification runs: how long the walk takes, and how long the server keeps a liveness probe
 * waiting meanwhile. The server runs in its own process so the probe measures its event loop.
 */
export async function run(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "hallmark-bench-audit-"));
  try {
    let t = performance.now();
    const store = await openSqliteStore(join(dataDir, "hallmark.db"));
    const log = new AuditLog(store.audit);
    for (let i = 0; i < RECORDS; i++) {
      await log.append({ time: new Date(1_700_000_000_000 + i), event: "issue_x509", outcome: "success", actor: "spiffe://example.org/node", spiffeId: `spiffe://example.org/w${i % 100}`, serial: i.toString(16), details: { policy: "default", n: i } });
    }
    await store.close();
    console.log(`appended ${RECORDS} audit records in ${((performance.now() - t) / 1000).toFixed(1)} s`);

    const server = await startBenchServer(dataDir);
    try {
      const url = server.url;
      const socket = server.adminSocket;
      const { bundle_pem: bundlePem } = expectOk(await adminRequest(socket, "GET", "/admin/bundle")) as { bundle_pem: string };
      const client = new ApiClient(new URL(url), { trustBundlePem: bundlePem, maxSockets: 1 });
      try {
        const idle: number[] = [];
        for (let i = 0; i < 50; i++) idle.push(await timed(() => client.request("GET", "/healthz")));
        let done = false;
        t = performance.now();
        const verification = adminRequest(socket, "GET", "/admin/audit/verify").then((r) => {
          done = true;
          return { seconds: (performance.now() - t) / 1000, body: r.body as { ok: boolean; records: number } };
        });
        const during: number[] = [];
        while (!done) during.push(await timed(() => client.request("GET", "/healthz")));
        const v = await verification;
        const sorted = [...during].sort((a, b) => a - b);
        console.log(`verification of ${v.body.records} records (ok ${v.body.ok}): ${v.seconds.toFixed(2)} s`);
        console.log(`/healthz idle: p50 ${percentile([...idle].sort((a, b) => a - b), 50).toFixed(2)} ms`);
        console.log(
          `/healthz during verification: ${during.length} probes, p50 ${percentile(sorted, 50).toFixed(2)} ms, p99 ${percentile(sorted, 99).toFixed(2)} ms, max ${(sorted.at(-1) ?? Number.NaN).toFixed(2)} ms`,
        );
      } finally {
        client.close();
      }
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function timed(op: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await op();
  return performance.now() - t;
}
