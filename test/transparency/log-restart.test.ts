import { afterAll, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { auditRecordHash } from "../../src/audit/log.js";
import { openCheckpoint } from "../../src/transparency/checkpoint.js";
import { verifyConsistency } from "../../src/transparency/merkle.js";
import { type NoteVerifier, parseVerifierKey } from "../../src/transparency/note.js";
import { appendAuditRecordsInBulk, auditRecordCount, tamperAuditLog } from "../helpers/audit-records.js";
import { runCli } from "../helpers/cli.js";
import { httpsRaw } from "../helpers/https.js";
import { type ServerProcess, startServerProcess } from "../helpers/server-process.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * The transparency log across crashes and tampering, with real `hallmark server` processes:
 * kill -9 under load, records committed but never integrated, then a restart that catches up and
 * signs a checkpoint consistent with the last one; and a database edited under the server, which
 * the next start refuses (tlog_tree_diverged) and `hallmark audit verify` reports.
 */
const data = tempDir("tlog-restart");
const db = join(data.path, "hallmark.db");
const configFile = join(data.path, "hallmark.yaml");
writeFileSync(configFile, "transparency:\n  checkpointInterval: 1\n");
const running: ServerProcess[] = [];
afterAll(async () => {
  for (const p of running) await p.stop("SIGKILL");
  data.remove();
});

interface Live {
  proc: ServerProcess;
  url: string;
  bundle: string;
  key: NoteVerifier;
}

async function start(): Promise<Live> {
  const proc = startServerProcess(data.path, { args: ["--config", configFile] });
  running.push(proc);
  await proc.ready;
  const url = /listening on (https:\/\/\S+)/.exec(proc.stderr())![1]!;
  const bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  const key = parseVerifierKey((await httpsRaw(`${url}/log/key`, { ca: bundle })).text.trim());
  return { proc, url, bundle, key };
}

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(join(data.path, "admin.sock"), method, path, body));

async function checkpointOf(s: Live, atLeast: number): Promise<{ size: number; root: Buffer; text: string }> {
  for (;;) {
    const r = await httpsRaw(`${s.url}/log/checkpoint`, { ca: s.bundle });
    if (r.status === 200) {
      const cp = openCheckpoint(r.text, s.key).checkpoint;
      if (cp.treeSize >= atLeast) return { size: cp.treeSize, root: cp.rootHash, text: r.text };
    }
    await new Promise((res) => setTimeout(res, 100));
  }
}

const integratedSize = () => {
  const d = new Database(db, { readonly: true });
  try {
    return Number((d.prepare("SELECT integrated_size AS n FROM tlog_state").get() as { n: number }).n);
  } finally {
    d.close();
  }
};

describe("the transparency log across kill -9 and a tampered database", () => {
  let lastKey = "";
  let before: { size: number; root: Buffer } | undefined;

  it("kill -9 under load, records never integrated: the restarted server catches up and its next checkpoint extends the last", async () => {
    const first = await start();
    lastKey = `${first.key.name}+${first.key.keyId}`;
    // Load: admin changes (join tokens), each one audit record, eight in flight at a time.
    let stop = false;
    let done = 0;
    const load = Array.from({ length: 8 }, async () => {
      while (!stop) {
        await admin("POST", "/admin/tokens", { spiffe_id: `spiffe://example.org/node/load-${done}`, ttl_seconds: 600 }).catch(() => (stop = true));
        done++;
      }
    });
    before = await checkpointOf(first, 1);
    while (done < 150) await new Promise((r) => setTimeout(r, 5));
    first.proc.child.kill("SIGKILL");
    await first.proc.exited;
    stop = true;
    await Promise.all(load);
    // The torn state, made certain: records committed after the last integration (as a kill
    // between commit and integration leaves them), 300 of them, past a 256-leaf tile.
    appendAuditRecordsInBulk(db, 300);
    const records = auditRecordCount(db);
    expect(integratedSize()).toBeLessThan(records);

    const second = await start();
    expect(`${second.key.name}+${second.key.keyId}`).toBe(lastKey);
    const after = await checkpointOf(second, records);
    expect(integratedSize()).toBeGreaterThanOrEqual(records);
    const proof = await httpsRaw(`${second.url}/v1/log/proof/consistency?first=${before.size}&second=${after.size}`, { ca: second.bundle });
    expect(proof.status).toBe(200);
    verifyConsistency(before.size, after.size, before.root, after.root, (proof.body as { hashes: string[] }).hashes.map((h) => Buffer.from(h, "base64")));
    before = after;
    expect(await second.proc.stop()).toBe(0);

    const verify = await runCli(["audit", "verify", "--offline", "--data-dir", data.path]);
    expect(verify.code).toBe(0);
    expect(verify.stdout).toContain(`transparency log intact: ${auditRecordCount(db)} leaves recomputed`);
  });

  it("a record edited under the stopped server: the start is refused with tlog_tree_diverged, and audit verify reports it", async () => {
    const seq = auditRecordCount(db) - 3;
    const original = new Database(db, { readonly: true }).prepare("SELECT details FROM audit_log WHERE seq = ?").get(seq) as { details: string };
    tamperAuditLog(db, `UPDATE audit_log SET details = '{"forged":true}' WHERE seq = ${seq}`);
    const refused = startServerProcess(data.path, { args: ["--config", configFile] });
    running.push(refused);
    await expect(refused.ready).rejects.toThrow(/tlog_tree_diverged: audit record \d+ was edited after it was logged/);
    expect(await refused.exited).not.toBe(0);
    const verify = await runCli(["audit", "verify", "--offline", "--data-dir", data.path]);
    expect(verify.code).toBe(1);
    expect(verify.stdout).toContain(`audit log BROKEN at record ${seq}`);

    // Put back as it was: the start check is exact, and the server starts again.
    tamperAuditLog(db, `UPDATE audit_log SET details = '${original.details.replace(/'/g, "''")}' WHERE seq = ${seq}`);
    const restored = await start();
    await restored.proc.stop();
  });

  it("a record rewritten with every chain hash after it recomputed: the chain holds, the tree does not (start refused, audit verify: tree_mismatch)", async () => {
    const last = auditRecordCount(db);
    const seq = last - 5;
    const d = new Database(db, { readonly: true });
    const rows = d.prepare("SELECT * FROM audit_log WHERE seq >= ? ORDER BY seq").all(seq - 1) as Array<Record<string, unknown>>;
    d.close();
    // Rebuild the chain from seq on as an attacker with the file and the code would.
    let prevHash = String(rows[0]!.hash);
    const updates: string[] = [];
    for (const r of rows.slice(1)) {
      const details = r.seq === seq ? { forged: true } : (JSON.parse(String(r.details)) as Record<string, unknown>);
      const rec = {
        seq: Number(r.seq),
        prevHash,
        time: new Date(Number(r.time)),
        event: String(r.event),
        outcome: String(r.outcome) as "success",
        code: (r.code as string | null) ?? undefined,
        actor: (r.actor as string | null) ?? undefined,
        spiffeId: (r.spiffe_id as string | null) ?? undefined,
        attestor: (r.attestor as string | null) ?? undefined,
        serial: (r.serial as string | null) ?? undefined,
        details,
      };
      const hash = auditRecordHash(rec);
      updates.push(`UPDATE audit_log SET details = '${JSON.stringify(details).replace(/'/g, "''")}', prev_hash = '${prevHash}', hash = '${hash}' WHERE seq = ${rec.seq};`);
      prevHash = hash;
    }
    tamperAuditLog(db, updates.join("\n"));
    const verify = await runCli(["audit", "verify", "--offline", "--data-dir", data.path]);
    expect(verify.code).toBe(1);
    expect(verify.stdout).toContain(`audit log BROKEN at record ${seq}: tree_mismatch`);
    const refused = startServerProcess(data.path, { args: ["--config", configFile] });
    running.push(refused);
    await expect(refused.ready).rejects.toThrow(new RegExp(`tlog_tree_diverged: audit record ${seq} was edited after it was logged`));
  });

  it("a record removed under the stopped server: the start is refused, and audit verify reports the gap", async () => {
    const last = auditRecordCount(db);
    tamperAuditLog(db, `DELETE FROM audit_log WHERE seq = ${last - 10}`);
    const refused = startServerProcess(data.path, { args: ["--config", configFile] });
    running.push(refused);
    await expect(refused.ready).rejects.toThrow(/tlog_tree_diverged: 1 audit record\(s\) were removed/);
    const verify = await runCli(["audit", "verify", "--offline", "--data-dir", data.path]);
    expect(verify.code).toBe(1);
    expect(verify.stdout).toContain(`audit log BROKEN at record ${last - 10}: sequence_gap`);
  });
});
