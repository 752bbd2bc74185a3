import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { AuditLog, verifyAuditChain } from "../../src/audit/log.js";
import { openPostgresStore } from "../../src/store/postgres/index.js";
import { KNOWN_SCHEMA_VERSION } from "../../src/store/sqlite/schema.js";
import { AUDIT_GENESIS_HASH, type Store } from "../../src/store/types.js";
import { runCli } from "../helpers/cli.js";
import { TEST_POOL, fileCluster, registerEngineCleanup } from "../helpers/store-engines.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Two Store instances on one PostgreSQL database, each with its own pool: two server replicas.
 * Every read-modify-write the interface promises to be atomic is raced from both at once, and
 * exactly one caller wins; sequences stay gapless; schema migrations run once.
 */
registerEngineCleanup();
const t0 = new Date("2026-01-01T00:00:00Z");
const later = (s: number) => new Date(t0.getTime() + s * 1000);
const open = (url: string, migrate?: boolean) => openPostgresStore({ url, pool: TEST_POOL, migrate });

async function sql(url: string, text: string, args: unknown[] = []): Promise<Array<Record<string, unknown>>> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text, args)).rows as Array<Record<string, unknown>>;
  } finally {
    await c.end();
  }
}

/** Runs `n` calls alternately on replica a and b, all at once. */
const race = <T>(a: Store, b: Store, n: number, call: (s: Store, i: number) => Promise<T>) =>
  Promise.allSettled(Array.from({ length: n }, (_, i) => call(i % 2 ? b : a, i)));
const fulfilled = <T>(r: PromiseSettledResult<T>[]) => r.filter((x): x is PromiseFulfilledResult<T> => x.status === "fulfilled").map((x) => x.value);

describe("two replicas on one PostgreSQL database", () => {
  let a: Store;
  let b: Store;
  beforeAll(async () => {
    const url = await (await fileCluster()).createDatabase("race");
    [a, b] = await Promise.all([open(url), open(url)]);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it("consumes a join token once across both", async () => {
    await a.joinTokens.create({ tokenHash: "a".repeat(64), spiffeId: "spiffe://example.org/n1", expiresAt: later(60), createdAt: t0 });
    const outcomes = fulfilled(await race(a, b, 16, (s) => s.joinTokens.consume("a".repeat(64), later(1)))).map((o) => o.outcome);
    expect(outcomes).toHaveLength(16);
    expect(outcomes.filter((o) => o === "consumed")).toHaveLength(1);
    expect(outcomes.filter((o) => o === "used")).toHaveLength(15);
  });

  it("moves a session (its nonce) out of open once across both", async () => {
    await a.sessions.create({ id: "s1", attestorType: "tpm", nonce: Buffer.alloc(32, 7), status: "open", expiresAt: later(60), createdAt: t0 });
    const outcomes = fulfilled(await race(a, b, 16, (s, i) => s.sessions.transition("s1", "open", "challenged", later(1), { state: { by: i } })));
    expect(outcomes.filter((o) => o === "consumed")).toHaveLength(1);
    expect(outcomes.filter((o) => o === "used")).toHaveLength(15);
    expect((await b.sessions.get("s1"))?.status).toBe("challenged");
  });

  it("appends audit records from both into one gapless chain that verifies", async () => {
    const logs = [new AuditLog(a.audit), new AuditLog(b.audit)];
    const results = await Promise.allSettled(
      Array.from({ length: 60 }, (_, i) => logs[i % 2]!.append({ time: later(i), event: "issue_x509", outcome: "success", serial: `s${i}`, details: { i, replica: i % 2 } })),
    );
    expect(fulfilled(results)).toHaveLength(60);
    const seqs = fulfilled(results).map((r) => r.seq).sort((x, y) => x - y);
    expect(seqs).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    expect(await a.audit.extent()).toEqual({ count: 60, lastSeq: 60 });
    expect(await verifyAuditChain(b.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: true, records: 60 });
  });

  it("bumps the bundle sequence from both without losing or repeating a number, and applies concurrent key status changes", async () => {
    const seqs = fulfilled(await race(a, b, 20, (s) => s.caKeys.bumpBundleSequence())).sort((x, y) => x - y);
    expect(seqs).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    for (const id of ["k1", "k2"]) await a.caKeys.insert({ id, kind: "x509", label: `hallmark-x509-${id}`, keyType: "ec-p256", status: "prepared", createdAt: t0 });
    await Promise.all([a.caKeys.setStatus("k1", "active", later(1)), b.caKeys.setStatus("k2", "previous", later(1)), b.caKeys.setStatus("k1", "active", later(1))]);
    expect((await b.caKeys.list("x509")).map((k) => [k.id, k.status])).toEqual([
      ["k1", "active"],
      ["k2", "previous"],
    ]);
  });

  it("keeps SVID serials unique by a constraint: the second insert of a serial fails", async () => {
    const svid = { serial: "0a0b", spiffeId: "spiffe://example.org/w", kind: "x509" as const, caKeyId: "k1", issuedAt: t0, notAfter: later(3600) };
    const results = await Promise.allSettled([a.svids.record(svid), b.svids.record({ ...svid, spiffeId: "spiffe://example.org/other" })]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const refused = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(refused.reason).toMatchObject({ code: "23505" });
    expect(a.healthy()).toBe(true);
  });

  it("remembers a DPoP proof once: every replay on either replica is refused", async () => {
    const answers = fulfilled(await race(a, b, 16, (s) => s.dpopProofs.remember("proof-1", later(60), later(1))));
    expect(answers.filter((x) => x)).toHaveLength(1);
    expect(answers.filter((x) => !x)).toHaveLength(15);
  });

  it("lets one integrator and one checkpoint signer win a race on the transparency log", async () => {
    const hash = (n: number) => Buffer.alloc(32, n);
    const integrated = fulfilled(await race(a, b, 8, (s, i) => s.transparency.integrate(0, 1, [{ level: 0, index: 0, hash: hash(i) }])));
    expect(integrated.filter((x) => x)).toHaveLength(1);
    expect(await b.transparency.state()).toMatchObject({ integratedSize: 1 });
    expect(await a.transparency.readHashes([{ level: 0, index: 0 }, { level: 0, index: 1 }])).toHaveLength(2);
    const cp = (i: number) => ({ text: `checkpoint ${i}\n`, treeSize: 1, rootHash: hash(9), signedAt: later(i) });
    const saved = fulfilled(await race(a, b, 8, (s, i) => s.transparency.saveCheckpoint(undefined, cp(i))));
    expect(saved.filter((x) => x)).toHaveLength(1);
    expect(await a.transparency.saveCheckpoint(1, cp(99))).toBe(true);
    expect((await b.transparency.state()).checkpoint?.text).toBe("checkpoint 99\n");
  });

  it("numbers entry changes from both replicas gaplessly, each one seen once", async () => {
    const entry = (i: number) => ({ id: `e${i}`, spiffeId: `spiffe://example.org/w/${i}`, parentId: "spiffe://example.org/n1", selectors: ["unix:uid:1"], dnsNames: [], admin: false, createdAt: later(i) });
    expect(fulfilled(await race(a, b, 30, (s, i) => s.entries.create(entry(i))))).toHaveLength(30);
    const page = (await b.entries.changesSince(0, 100))!;
    expect(page.changes.map((c) => c.revision)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(new Set(page.changes.map((c) => c.entryId)).size).toBe(30);
    expect(await a.entries.revision()).toBe(30);
  });
});

describe("PostgreSQL schema migrations", () => {
  it("migrates an empty database once when two replicas open it at the same moment", async () => {
    const url = await (await fileCluster()).createDatabase("migrate");
    const stores = await Promise.all([open(url), open(url), open(url)]);
    await Promise.all(stores.map((s) => s.close()));
    const versions = (await sql(url, "SELECT version FROM schema_version ORDER BY version")).map((r) => Number(r.version));
    expect(versions).toEqual(Array.from({ length: KNOWN_SCHEMA_VERSION }, (_, i) => i + 1));
  });

  it("refuses a database a newer Hallmark migrated (store_too_new), and leaves it as it was", async () => {
    const url = await (await fileCluster()).createDatabase("newer");
    await (await open(url)).close();
    await sql(url, "INSERT INTO schema_version (version) VALUES ($1)", [KNOWN_SCHEMA_VERSION + 1]);
    await expect(open(url)).rejects.toMatchObject({ code: "store_too_new" });
    await expect(open(url, false)).rejects.toMatchObject({ code: "store_too_new" });
    expect((await sql(url, "SELECT MAX(version) AS v FROM schema_version"))[0]!.v).toBe(KNOWN_SCHEMA_VERSION + 1);
  });

  it("with migrations off, refuses a schema behind this build; hallmark store migrate brings it up, and then it opens", async () => {
    const url = await (await fileCluster()).createDatabase("behind");
    await expect(open(url, false)).rejects.toMatchObject({ code: "store_schema_behind" });
    const dir = tempDir("no-migrate");
    try {
      const server = await runCli(["server", "--no-migrate", "--data-dir", dir.path, "--listen", "127.0.0.1:0"], { HALLMARK_STORE_URL: url });
      expect(server.code).toBe(1);
      expect(server.stderr).toMatch(/^hallmark: store_schema_behind: .*schema version 0; this hallmark needs \d+: run 'hallmark store migrate'/m);
      expect(await sql(url, "SELECT to_regclass('schema_version') AS t")).toEqual([{ t: null }]);
      const migrate = await runCli(["store", "migrate", "--data-dir", dir.path], { HALLMARK_STORE_URL: url });
      expect(migrate.stderr).toBe("");
      expect(migrate.stdout.trim()).toBe(`datastore (postgres) at schema version ${KNOWN_SCHEMA_VERSION}`);
      await (await open(url, false)).close();
    } finally {
      dir.remove();
    }
  });

  it("names the database without its password when it cannot be reached", async () => {
    const cluster = await fileCluster();
    const url = `postgres://hallmark:s3cret-pw@127.0.0.1:${cluster.port + 1}/nowhere`;
    const refused = await open(url).then(
      () => undefined,
      (e: unknown) => e as Error & { code: string },
    );
    expect(refused?.code).toBe("datastore_open_failed");
    expect(refused?.message).toContain(`postgres://hallmark:***@127.0.0.1:${cluster.port + 1}/nowhere`);
    expect(refused?.message).not.toContain("s3cret-pw");
  });
});
