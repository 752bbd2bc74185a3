import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { decodeJwt } from "jose";
import { afterAll, describe, expect, it } from "vitest";
import { AuditLog, verifyAuditChain } from "../../src/audit/log.js";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { AUDIT_GENESIS_HASH } from "../../src/store/types.js";
import { httpsRaw, postJson } from "../helpers/https.js";
import { type ServerProcess, startServerProcess } from "../helpers/server-process.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Group commit in a real `hallmark server` process (issue 10): JWT-SVIDs issued by 16 concurrent
 * clients share audit transactions (the batch-size histogram on /metrics says so), and kill -9 in
 * the middle of that load leaves a chain that verifies, with every SVID a client received
 * recorded, with its audit record at the log index the answer gave.
 */
const data = tempDir("group-commit");
const configFile = join(data.path, "hallmark.yaml");
// A window wider than the default: batches are certainly in flight when the process is killed.
writeFileSync(configFile, "audit:\n  groupCommit:\n    maxDelayMs: 2\n");
const NODE_ID = "spiffe://example.org/node/load";
const WORKLOAD_ID = "spiffe://example.org/workload/load";
let proc: ServerProcess | undefined;
afterAll(async () => {
  await proc?.stop("SIGKILL");
  data.remove();
});

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(join(data.path, "admin.sock"), method, path, body));

function histogram(metrics: string, name: string): { sum: number; count: number } {
  const value = (suffix: string) => Number(new RegExp(`^${name}_${suffix} (\\S+)$`, "m").exec(metrics)?.[1]);
  return { sum: value("sum"), count: value("count") };
}

describe("audit group commit in a server process", () => {
  it("concurrent issuance shares transactions; kill -9 under it leaves a chain that verifies and no SVID handed out unrecorded", async () => {
    proc = startServerProcess(data.path, { args: ["--config", configFile] });
    await proc.ready;
    const url = /listening on (https:\/\/\S+)/.exec(proc.stderr())![1]!;
    const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: NODE_ID, ttl_seconds: 600 })) as { token: string };
    const { bundle_pem: bundle } = (await admin("GET", "/admin/bundle")) as { bundle_pem: string };
    const node = await attest({ server: url, tls: { trustBundlePem: bundle }, producer: joinTokenProducer(token) });
    await admin("POST", "/admin/entries", { spiffe_id: WORKLOAD_ID, parent_id: NODE_ID, selectors: [] });

    const received: Array<{ jti: string; logIndex: number }> = [];
    let stop = false;
    const load = Array.from({ length: 16 }, async () => {
      while (!stop) {
        const r = await postJson(`${url}/v1/svids/jwt`, { audience: ["https://api.example.org"] }, { ca: bundle, cert: node.certChainPem, key: node.privateKeyPem! }).catch(() => undefined);
        if (!r) break; // the process is gone
        if (r.status !== 200) continue;
        const body = r.body as { token: string; log_index: number };
        received.push({ jti: String(decodeJwt(body.token).jti), logIndex: body.log_index });
      }
    });
    while (received.length < 100) await new Promise((r) => setTimeout(r, 5));
    // Group commit at work: fewer transactions than records.
    const batches = histogram((await httpsRaw(`${url}/metrics`, { ca: bundle })).text, "hallmark_audit_commit_batch_size");
    expect(batches.sum).toBeGreaterThanOrEqual(100);
    expect(batches.count).toBeLessThan(batches.sum);
    while (received.length < 250) await new Promise((r) => setTimeout(r, 5));
    proc.child.kill("SIGKILL");
    await proc.exited;
    stop = true;
    await Promise.all(load);

    const store = await openSqliteStore(join(data.path, "hallmark.db"));
    try {
      const extent = await store.audit.extent();
      expect(await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: true, records: extent.count });
      for (const { jti, logIndex } of received) {
        // A JWT-SVID's record is keyed by its jti (src/issuer/authority.ts).
        expect(await store.svids.get(`jwt-${jti}`), `JWT-SVID ${jti} was handed out`).toMatchObject({ kind: "jwt", spiffeId: WORKLOAD_ID });
        const [record] = await store.audit.list(logIndex, 1);
        expect(record).toMatchObject({ seq: logIndex + 1, event: "issue_jwt", outcome: "success", spiffeId: WORKLOAD_ID });
      }
      // And the log goes on from the head the kill left.
      const next = await new AuditLog(store.audit).append({ time: new Date(), event: "token_create", outcome: "success", details: {} });
      expect(next.seq).toBe(extent.lastSeq + 1);
    } finally {
      await store.close();
    }
  }, 60_000);
});
