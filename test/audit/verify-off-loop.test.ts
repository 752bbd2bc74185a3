import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { AuditLog } from "../../src/audit/log.js";
import { type ApiResponse, adminRequest, expectOk } from "../../src/client/http.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { appendAuditRecordsInBulk, auditRecordCount } from "../helpers/audit-records.js";
import { httpsRaw } from "../helpers/https.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

// Issue 7 item 6: with 422k records, `hallmark audit verify` stalled /healthz for the whole walk.
const BULK = 100_000;
const data = tempDir("audit-off-loop");
let server: TestServer | undefined;

beforeAll(async () => {
  const dbPath = join(data.path, "hallmark.db");
  const store = await openSqliteStore(dbPath);
  await store.close();
  appendAuditRecordsInBulk(dbPath, BULK);
  // The last few through the production path, so the walk crosses from bulk records to appended ones.
  const again = await openSqliteStore(dbPath);
  const log = new AuditLog(again.audit);
  for (let i = 0; i < 3; i++) await log.append({ time: new Date(), event: "token_create", outcome: "success", actor: "admin:socket", details: { i } });
  await again.close();
  server = await startTestServer({ dataDir: data.path });
}, 60_000);
afterAll(async () => {
  await server?.close();
  data.remove();
});

describe("audit verification runs off the event loop", () => {
  it("the server answers /healthz while it walks 100k records, and a second verification meanwhile gets 409", async () => {
    // BULK + 3, and the records of the server's own start (CA keys, its TLS SVID).
    const records = auditRecordCount(join(data.path, "hallmark.db"));
    expect(records).toBeGreaterThan(BULK + 3);
    let verificationAnswered = false;
    const first = adminRequest(server!.adminSocket, "GET", "/admin/audit/verify").then((r) => {
      verificationAnswered = true;
      return r;
    });
    const second = adminRequest(server!.adminSocket, "GET", "/admin/audit/verify");
    // The test and the server share this process's event loop: a walk on it would hold every
    // probe until it ended. One probe at a time, each started after the previous one answered.
    let probesAnsweredDuringVerification = 0;
    while (!verificationAnswered) {
      const probe = await httpsRaw(`${server!.url}/healthz`);
      expect(probe.status).toBe(200);
      if (!verificationAnswered) probesAnsweredDuringVerification += 1;
    }
    expect(probesAnsweredDuringVerification).toBeGreaterThanOrEqual(3);

    const answers: ApiResponse[] = await Promise.all([first, second]);
    const ok = answers.filter((a) => a.status === 200);
    const busy = answers.filter((a) => a.status === 409);
    // Which of the two the server took first is up to the sockets; one walks, the other is refused.
    expect(ok).toHaveLength(1);
    expect(busy).toHaveLength(1);
    expect(ok[0]!.body).toMatchObject({ ok: true, records });
    expect(busy[0]!.body).toMatchObject({ code: "audit_verify_running" });

    // Finished: the next one runs, and the metric says what the walk found.
    expect(expectOk(await adminRequest(server!.adminSocket, "GET", "/admin/audit/verify"))).toMatchObject({ ok: true, records });
    const metrics = (await httpsRaw(`${server!.url}/metrics`)).text;
    expect(metrics).toMatch(/^hallmark_audit_chain_ok 1$/m);
    expect(metrics).toMatch(new RegExp(`^hallmark_audit_chain_checked_records ${records}$`, "m"));
  }, 60_000);

  it("stopping the server stops a walk under way: its caller gets unavailable, not a wait for the end", async () => {
    const both = [adminRequest(server!.adminSocket, "GET", "/admin/audit/verify"), adminRequest(server!.adminSocket, "GET", "/admin/audit/verify")];
    // The refusal comes back first, and proves the other one is walking.
    expect(await Promise.race(both)).toMatchObject({ status: 409, body: { code: "audit_verify_running" } });
    const s = server!;
    server = undefined;
    await s.close();
    const answers = await Promise.all(both);
    expect(answers.map((a) => a.status).sort()).toEqual([409, 503]);
    expect(answers.find((a) => a.status === 503)?.body).toMatchObject({ code: "unavailable" });
  }, 60_000);
});
