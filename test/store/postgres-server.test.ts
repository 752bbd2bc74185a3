import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { createLogger } from "../../src/log.js";
import { runCli } from "../helpers/cli.js";
import { type HttpsResult, httpsRaw, postJson } from "../helpers/https.js";
import { type PostgresCluster, startPostgresCluster } from "../helpers/postgres.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * A deployment moved from SQLite to PostgreSQL with `hallmark store copy`, then served from
 * PostgreSQL: the same CA (the same SoftHSM2 token, found by label), the audit chain verified on
 * the target, issuance going on; then the database killed under the running server (503
 * store_unavailable, /readyz not ready) and started again (ready again by itself).
 */
const dir = tempDir("pg-server");
const dataDir = dir.path;
let cluster: PostgresCluster;
let url: string;
let server: TestServer | undefined;
const lines: Array<Record<string, unknown>> = [];
const log = createLogger("info", { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });

const admin = async (s: TestServer, method: string, path: string, body?: unknown) => expectOk(await adminRequest(s.adminSocket, method, path, body));
const newToken = async (s: TestServer, name: string) =>
  ((await admin(s, "POST", "/admin/tokens", { spiffe_id: `spiffe://example.org/node/${name}`, ttl_seconds: 600 })) as { token: string }).token;
const caKeys = async (s: TestServer) => JSON.stringify(await admin(s, "GET", "/admin/ca/keys"));
const bundleOf = async (s: TestServer) => (await httpsRaw(`${s.url}/.well-known/spiffe-bundle`)).text;

beforeAll(async () => {
  cluster = await startPostgresCluster();
  console.warn(`postgres cluster started in ${cluster.startMs} ms`);
  url = await cluster.createDatabase("copy");
}, 60_000);
afterAll(async () => {
  await server?.close();
  cluster?.destroy();
  dir.remove();
});

describe("a SQLite deployment copied to PostgreSQL and served from it", () => {
  let keysBefore: string;
  let bundleBefore: string;
  let auditBefore: number;

  it("issues on SQLite, then copies every table to an empty database, the audit chain verified there", async () => {
    const sqlite = await startTestServer({ dataDir });
    try {
      for (const n of ["a", "b"]) {
        const svid = await attest({ server: sqlite.url, tls: {}, producer: joinTokenProducer(await newToken(sqlite, n)) });
        expect(svid.spiffeId).toBe(`spiffe://example.org/node/${n}`);
      }
      await admin(sqlite, "POST", "/admin/entries", { spiffe_id: "spiffe://example.org/w/1", parent_id: "spiffe://example.org/node/a", selectors: ["unix:uid:1000"] });
      keysBefore = await caKeys(sqlite);
      bundleBefore = await bundleOf(sqlite);
      auditBefore = ((await admin(sqlite, "GET", "/admin/audit/verify")) as { records: number }).records;
    } finally {
      await sqlite.close();
    }
    const copy = await runCli(["store", "copy", "--from", `sqlite:${dataDir}`, "--to", url, "--json"]);
    expect(copy.stderr).toBe("");
    expect(copy.code).toBe(0);
    const report = JSON.parse(copy.stdout) as { tables: Record<string, number>; audit: { ok: boolean; records: number } };
    expect(report.tables.audit_log).toBe(auditBefore);
    expect(report.tables.issued_svids).toBeGreaterThanOrEqual(2);
    expect(report.tables.entries).toBe(1);
    expect(report.audit).toMatchObject({ ok: true, records: auditBefore });

    // A second copy onto the now full database writes nothing and says why.
    const again = await runCli(["store", "copy", "--from", `sqlite:${dataDir}`, "--to", url]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^hallmark: store_not_empty: /);
  });

  it("serves the same CA from PostgreSQL with the same token, issues there, and audit verify passes", async () => {
    server = await startTestServer({ dataDir, overrides: { store: { driver: "postgres", url } }, log });
    expect(await caKeys(server)).toBe(keysBefore);
    expect(await bundleOf(server)).toBe(bundleBefore);
    const svid = await attest({ server: server.url, tls: {}, producer: joinTokenProducer(await newToken(server, "c")) });
    expect(svid.spiffeId).toBe("spiffe://example.org/node/c");
    const entries = (await admin(server, "GET", "/admin/entries")) as { entries: Array<{ spiffe_id: string }> };
    expect(entries.entries.map((e) => e.spiffe_id)).toEqual(["spiffe://example.org/w/1"]);
    const verify = await runCli(["audit", "verify", "--data-dir", dataDir]);
    expect(verify.stderr).toBe("");
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/audit log intact: \d+ records/);
    expect(Number(/intact: (\d+) records/.exec(verify.stdout)![1])).toBeGreaterThan(auditBefore);
    // A backup is pg_dump's job: refused with a code that says so, and audited.
    const backup = await runCli(["backup", "--data-dir", dataDir, "--out", `${dataDir}/backup.db`]);
    expect(backup.code).toBe(1);
    expect(backup.stderr).toMatch(/^hallmark: backup_unsupported: .*pg_dump/);
  });
});

describe("the database unreachable under a running server", () => {
  const readyz = () => httpsRaw(`${server!.url}/readyz`);
  const openSession = () => postJson(`${server!.url}/v1/attest/sessions`, { attestor: "join_token" });
  async function until(status: number): Promise<number> {
    let seen = 0;
    for (let i = 0; i < 150 && seen !== status; i++) {
      seen = (await readyz()).status;
      if (seen !== status) await new Promise((r) => setTimeout(r, 100));
    }
    return seen;
  }
  function expectStoreUnavailable(r: HttpsResult): void {
    expect(r.status, r.text).toBe(503);
    expect(r.contentType).toContain("application/problem+json");
    expect(r.body).toMatchObject({ status: 503, code: "store_unavailable" });
    expect(r.text).not.toMatch(/ECONNREFUSED|postgres|\.js:\d+/);
  }

  it("answers 503 store_unavailable and is not ready while PostgreSQL is down, and comes back by itself", async () => {
    expect((await readyz()).status).toBe(200);
    cluster.kill();
    expectStoreUnavailable(await openSession());
    expect(await until(503)).toBe(503);
    for (let i = 0; i < 20; i++) expectStoreUnavailable(await openSession());
    // Long enough for the transparency integrator (every second) to fail several times.
    await new Promise((r) => setTimeout(r, 3000));
    expect(lines.filter((l) => String(l.msg).startsWith("datastore unreachable")).length).toBe(1);
    // Background tasks say so once per outage, at warn, without a stack.
    const integration = lines.filter((l) => String(l.msg).startsWith("transparency log integration failed"));
    expect(integration).toHaveLength(1);
    expect(integration[0]).toMatchObject({ level: 40, code: "store_unavailable" });
    expect(lines.filter((l) => l.level === 50 && JSON.stringify(l).includes(`"stack"`))).toEqual([]);
    // The API's lines about the outage are short and stackless (background tasks log their own failures).
    const apiLines = lines.filter((l) => l.code === "store_unavailable");
    expect(apiLines.length).toBeGreaterThanOrEqual(1);
    expect(apiLines.filter((l) => JSON.stringify(l).includes(`"stack"`))).toEqual([]);

    cluster.start();
    expect(await until(200)).toBe(200);
    expect((await openSession()).status).toBe(201);
    expect(lines.some((l) => l.msg === "datastore answers again")).toBe(true);
    expect(await admin(server!, "GET", "/admin/audit/verify")).toMatchObject({ ok: true });
  });
});
