import { afterAll, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { createHash } from "node:crypto";
import { copyFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AuditLog } from "../../src/audit/log.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { createLogger } from "../../src/log.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { auditRecordCount, tamperAuditLog } from "../helpers/audit-records.js";
import { runCli } from "../helpers/cli.js";
import { httpsRaw } from "../helpers/https.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

// Issue 7 item 6: `hallmark audit verify` with the server stopped (forensics), and the server's
// own check of the log's tail at start.
const data = tempDir("audit-offline");
const copy = tempDir("audit-offline-copy");
const dbPath = join(data.path, "hallmark.db");
let server: TestServer | undefined;
afterAll(async () => {
  await server?.close();
  data.remove();
  copy.remove();
});

const fileHash = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

describe("audit verify with the server stopped, and the tail check at start", () => {
  it("verifies through the running server and says so; its intact tail is exported as hallmark_audit_chain_ok 1", async () => {
    server = await startTestServer({ dataDir: data.path });
    for (const n of ["a", "b", "c"]) {
      expectOk(await adminRequest(server.adminSocket, "POST", "/admin/tokens", { spiffe_id: `spiffe://example.org/${n}`, ttl_seconds: 600 }));
    }
    // Besides the three tokens, the server audits its own start (CA keys, its TLS SVID).
    const records = auditRecordCount(dbPath);
    expect(records).toBeGreaterThan(3);
    const r = await runCli(["audit", "verify", "--data-dir", data.path]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^mode: server /m);
    expect(r.stdout).toMatch(new RegExp(`^audit log intact: ${records} records`, "m"));
    // Started on an empty log: nothing to check, nothing broken.
    expect((await httpsRaw(`${server.url}/metrics`)).text).toMatch(/^hallmark_audit_chain_ok 1$/m);
  });

  it("without a server, points at --offline instead of guessing", async () => {
    await server!.close();
    server = undefined;
    const r = await runCli(["audit", "verify", "--data-dir", data.path]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^hallmark: unavailable: (no admin socket at|nothing answers on the admin socket) .*add --offline/);
  });

  it("--offline verifies an intact log read-only: the database file stays byte-identical", async () => {
    const records = auditRecordCount(dbPath);
    const before = fileHash(dbPath);
    const r = await runCli(["audit", "verify", "--data-dir", data.path, "--offline", "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ mode: "offline", ok: true, records });
    expect(fileHash(dbPath)).toBe(before);
    // A writer still open (a server that crashed or runs on): its last record is only in the WAL.
    // The offline walk reads it there and leaves it there; nothing is checkpointed into the file.
    const writer = await openSqliteStore(dbPath);
    try {
      await new AuditLog(writer.audit).append({ time: new Date(), event: "token_create", outcome: "success", details: {} });
      const withWal = await runCli(["audit", "verify", "--data-dir", data.path, "--offline", "--json"]);
      expect(JSON.parse(withWal.stdout)).toMatchObject({ mode: "offline", ok: true, records: records + 1 });
      expect(fileHash(dbPath)).toBe(before);
    } finally {
      await writer.close();
    }
    const text = await runCli(["audit", "verify", "--data-dir", data.path, "--offline"]);
    expect(text.stdout).toMatch(/^mode: offline \(read-only open of .*hallmark\.db; no server asked\)$/m);
  });

  it("--offline exits 1 on an edited record, and still writes nothing", async () => {
    tamperAuditLog(dbPath, "UPDATE audit_log SET spiffe_id = 'spiffe://example.org/evil' WHERE seq = 3");
    const before = fileHash(dbPath);
    const r = await runCli(["audit", "verify", "--data-dir", data.path, "--offline"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^audit log BROKEN at record 3: hash_mismatch$/m);
    expect(fileHash(dbPath)).toBe(before);
  });

  it("--offline refuses a database from a newer schema version, in one line, without touching it", async () => {
    copyFileSync(dbPath, join(copy.path, "hallmark.db"));
    const db = new Database(join(copy.path, "hallmark.db"));
    db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(99);
    db.close();
    const before = fileHash(join(copy.path, "hallmark.db"));
    const r = await runCli(["audit", "verify", "--data-dir", copy.path, "--offline"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^hallmark: store_too_new: \S+ has schema version 99; this hallmark knows up to \d+: upgrade hallmark or restore an older backup$/);
    expect(fileHash(join(copy.path, "hallmark.db"))).toBe(before);
  });

  it("a server started on the tampered log says so loudly, and the transparency log refuses the start (tlog_tree_diverged)", async () => {
    const lines: string[] = [];
    const log = createLogger("info", { write: (line: string) => void lines.push(line) });
    // Issue 12: the edited record was a leaf of the signed tree, so the start is refused; the
    // chain's own tail check still logs what it found first.
    await expect(startTestServer({ dataDir: data.path, log })).rejects.toThrow(/audit record 3 was edited after it was logged/);
    const broken = lines.map((l) => JSON.parse(l) as { level: number; msg: string; brokenAt?: number; reason?: string }).filter((l) => l.level >= 50);
    expect(broken[0]).toMatchObject({ brokenAt: 3, reason: "hash_mismatch" });
    expect(broken[0]!.msg).toMatch(/^AUDIT LOG CHAIN BROKEN at record 3 \(hash_mismatch\)/);
  });
});
