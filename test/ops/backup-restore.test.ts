import { afterAll, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { createHash } from "node:crypto";
import { cpSync, existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { NodeClient } from "../../src/client/node.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { runCli } from "../helpers/cli.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 8, "running it for real", item 1: `hallmark backup` takes a consistent copy of the
 * database while the server issues SVIDs, and the README's restore (the database from the
 * backup, the SoftHSM token directory copied) brings back the same CA, nodes, entries and an
 * audit log that verifies.
 */
const original = tempDir("backup-live");
const restored = tempDir("backup-restored");
const out = tempDir("backup-out");
let server: TestServer | undefined;
afterAll(async () => {
  await server?.close();
  for (const d of [original, restored, out]) d.remove();
});

const NODE = "spiffe://example.org/node/backed-up";
const WORKLOAD = "spiffe://example.org/backed-up/web";
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const admin = async (s: TestServer, method: string, path: string, body?: unknown) => expectOk(await adminRequest(s.adminSocket, method, path, body));
const bundleOf = async (s: TestServer) => ((await admin(s, "GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;

describe("backup and restore", () => {
  it("backs up under a write load, refuses to overwrite, and a restore serves the same CA, nodes, entries and a verifying audit log", async () => {
    server = await startTestServer({ dataDir: original.path });
    const live = server;
    await admin(live, "POST", "/admin/entries", { parent_id: NODE, spiffe_id: WORKLOAD, selectors: [] });
    const { token } = (await admin(live, "POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
    const bundle = await bundleOf(live);
    const svid = await attest({ server: live.url, tls: { trustBundlePem: bundle }, producer: joinTokenProducer(token) });
    const node = new NodeClient(live.url, { certPem: svid.certChainPem, keyPem: svid.privateKeyPem!, trustBundlePem: bundle });

    // The write load: two loops issuing X.509-SVIDs (each one an SVID record and an audit record).
    let backingUp = false;
    let stop = false;
    let issuedDuringBackup = 0;
    const loop = async () => {
      while (!stop) {
        await node.fetchX509(WORKLOAD);
        if (backingUp) issuedDuringBackup++;
      }
    };
    const loops = [loop(), loop()];
    const file = join(out.path, "hallmark-backup.db");
    let r;
    try {
      await node.fetchX509(WORKLOAD);
      backingUp = true;
      r = await runCli(["backup", "--out", file, "--data-dir", live.dataDir]);
      backingUp = false;
      // A few more after the backup: the live database moves on; the backup must not.
      await node.fetchX509(WORKLOAD);
    } finally {
      stop = true;
      await Promise.all(loops);
      node.close();
    }
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(issuedDuringBackup).toBeGreaterThan(0);
    expect(r.stdout).toContain(`backup written to ${file}`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    // Nothing left behind: no temporary file beside the backup, no snapshot in the data directory.
    expect(readdirSync(out.path)).toEqual(["hallmark-backup.db"]);
    expect(readdirSync(live.dataDir).filter((f) => f.startsWith("backup-"))).toEqual([]);
    const db = new Database(file, { readonly: true });
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    } finally {
      db.close();
    }

    // Never overwritten by accident; replaced with --force.
    const digest = sha256(file);
    const again = await runCli(["backup", "--out", file, "--data-dir", live.dataDir]);
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toBe(`hallmark: backup_exists: ${file} exists: pass --force to replace it`);
    expect(sha256(file)).toBe(digest);
    const forced = await runCli(["backup", "--out", file, "--force", "--data-dir", live.dataDir]);
    expect(forced.code).toBe(0);
    expect(readdirSync(out.path)).toEqual(["hallmark-backup.db"]);
    const kept = sha256(file);

    // The README's restore: stop the server, copy the database and the token directory, start.
    await live.close();
    server = undefined;
    const audited = await openSqliteStore(join(original.path, "hallmark.db"));
    const backups = (await audited.audit.list(0, 1_000_000)).filter((a) => a.event === "backup");
    await audited.close();
    expect(backups.map((b) => b.outcome)).toEqual(["success", "success"]);
    // Each audit record names the SHA-256 of the copy it made (the --force one is the file kept).
    expect(backups[1]!.details.sha256).toBe(kept);

    cpSync(file, join(restored.path, "hallmark.db"));
    cpSync(join(original.path, "softhsm"), join(restored.path, "softhsm"), { recursive: true });
    server = await startTestServer({ dataDir: restored.path });
    const back = server;
    expect(await bundleOf(back)).toBe(bundle);
    const nodes = (await admin(back, "GET", "/admin/nodes")) as { nodes: Array<{ spiffe_id: string; serial: string | null }> };
    expect(nodes.nodes.map((n) => n.spiffe_id)).toEqual([NODE]);
    const entries = (await admin(back, "GET", "/admin/entries")) as { entries: Array<{ spiffe_id: string; parent_id: string }> };
    expect(entries.entries.map((e) => [e.parent_id, e.spiffe_id])).toEqual([[NODE, WORKLOAD]]);
    // The node's SVID from before the backup still works against the restored server.
    const restoredNode = new NodeClient(back.url, { certPem: svid.certChainPem, keyPem: svid.privateKeyPem!, trustBundlePem: bundle });
    try {
      expect((await restoredNode.fetchX509(WORKLOAD)).spiffeId).toBe(WORKLOAD);
    } finally {
      restoredNode.close();
    }
    const verify = await runCli(["audit", "verify", "--data-dir", back.dataDir]);
    expect(verify.stderr).toBe("");
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/^audit log intact: \d+ records/m);
    await back.close();
    server = undefined;
    expect(existsSync(join(restored.path, "hallmark.db"))).toBe(true);
  });

  it("refuses --out missing with a usage error, and a server that is not running with one line", async () => {
    const usage = await runCli(["backup", "--data-dir", original.path]);
    expect(usage.code).toBe(2);
    expect(usage.stderr.trim()).toBe("hallmark: --out is required (see 'hallmark backup --help')");
    const down = await runCli(["backup", "--out", join(out.path, "none.db"), "--data-dir", join(original.path, "nowhere")]);
    expect(down.code).toBe(1);
    expect(down.stderr.trim()).toMatch(/^hallmark: unavailable: cannot reach the server: ENOENT$/);
    expect(existsSync(join(out.path, "none.db"))).toBe(false);
  });
});
