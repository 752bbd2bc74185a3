import Database from "better-sqlite3";
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attest, joinTokenProducer, type SvidFiles } from "../../src/client/attest.js";
import { newClientKey } from "../../src/client/csr.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { findSoftHsmModule } from "../../src/hsm/softhsm.js";
import { normalizeSerial } from "../../src/service/ports.js";
import { waitFor } from "../helpers/kept-alive.js";
import { type ServerProcess, startServerProcess } from "../helpers/server-process.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 10, goal 5: `hallmark server --workers 2` on SQLite, as real processes with real signals.
 * Both workers serve (told apart by the server certificate each issued itself at start); every
 * serial is unique and the audit log is one chain in one order; a scheduled rotation is taken
 * once across the workers; an entry created through the admin socket (worker 0) answers a long
 * poll held by the other worker; a worker killed with SIGKILL is replaced; SIGTERM to the primary
 * stops the group and frees the data directory; a bad configuration fails once, readably.
 */
const NODE = "spiffe://example.org/node/workers";
const WORKLOAD = "spiffe://example.org/w/issued";
// CA keys live 16 s: prepare at 8 s, activate at 12 s, checked every second by each worker. So
// the node's first SVID and trust bundle serve only the first 16 s (see freshNode).
const ROTATING = { ca: { ttl: 16, rotation: { prepareAt: 0.5, activateAt: 0.75, checkInterval: 1 } } };

const work = tempDir("workers");
const hsmDir = join(work.path, "softhsm");
const softhsmConf = join(hsmDir, "softhsm2.conf");
const pinFile = join(hsmDir, "user.pin");
let dataDir: string;
let server: ServerProcess;
let url: string;
let node: SvidFiles;

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(join(dataDir, "admin.sock"), method, path, body));
const query = <T>(sql: string, ...args: unknown[]): T[] => {
  const db = new Database(join(dataDir, "hallmark.db"), { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...args) as T[];
  } finally {
    db.close();
  }
};
/** The server's worker processes: the primary's children, from /proc. */
const workerPids = (primary: number): number[] =>
  readFileSync(`/proc/${primary}/task/${primary}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);

interface Served {
  status: number;
  body: Record<string, unknown>;
  /** The serial of the server certificate this connection was served with: each worker issues its own. */
  serverSerial: string;
}

/** One request on a connection of its own (agent: false): cluster hands each new connection to the next worker. */
function call(method: string, path: string, body?: unknown): Promise<Served> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      { method, agent: false, ca: node.bundlePem, cert: node.certChainPem, key: node.privateKeyPem, checkServerIdentity: () => undefined, headers: body ? { "content-type": "application/json" } : {} },
      (res) => {
        const serverSerial = (res.socket as TLSSocket).getPeerCertificate().serialNumber;
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>, serverSerial }));
      },
    );
    req.on("error", reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

async function issueX509(): Promise<Served & { serial: string; leafPem: string }> {
  const key = await newClientKey();
  const r = await call("POST", "/v1/svids/x509", { csr: key.csrPem, spiffe_id: WORKLOAD });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  const svid = r.body.svid as { serial: string; cert_chain_pem: string };
  return { ...r, serial: svid.serial, leafPem: svid.cert_chain_pem };
}

/**
 * The node attested again with a new join token: an SVID from the CA key active now, and the
 * bundle as it is now. The first key's life bounds the first SVID, and a client trusting only
 * that key cannot verify a server certificate from a later key once the first key's
 * certificates (the cross-signed one included) have expired.
 */
async function freshNode(): Promise<SvidFiles> {
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
  const { bundle_pem: trustBundlePem } = (await admin("GET", "/admin/bundle")) as { bundle_pem: string };
  return attest({ server: url, tls: { trustBundlePem }, producer: joinTokenProducer(token) });
}

function writeConfig(name: string, config: Record<string, unknown>): string {
  const file = join(work.path, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      trustDomain: "example.org",
      hsm: { modulePath: findSoftHsmModule(), tokenLabel: "hallmark", pinFile, softhsmAutoInit: false },
      limits: { maxConnectionsPerAddress: 100_000, attestRate: { perSecond: 1_000_000, burst: 1_000_000 } },
      ...config,
    }),
  );
  return file;
}

function startWorkers(config: Record<string, unknown> = ROTATING): ServerProcess {
  return startServerProcess(dataDir, { args: ["--workers", "2", "--config", writeConfig("server", config)], env: { SOFTHSM2_CONF: softhsmConf } });
}

/** The HSM's key objects of one kind, listed by a separate process with its own PKCS#11 session. */
function hsmKeyLabels(kind: string): string[] {
  const script = `
    const { openPkcs11KeyStore } = await import(${JSON.stringify(new URL("../../dist/src/hsm/pkcs11-keystore.js", import.meta.url).href)});
    const ks = await openPkcs11KeyStore({ modulePath: ${JSON.stringify(findSoftHsmModule())}, tokenLabel: "hallmark", pin: "1234" });
    const objects = await ks.listKeyObjects(${JSON.stringify(`hallmark-${kind}-`)});
    await ks.close();
    console.log(JSON.stringify(objects.filter((o) => o.objectClass === "private-key").map((o) => o.label)));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, SOFTHSM2_CONF: softhsmConf }, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`listing the HSM's keys failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}

beforeAll(async () => {
  mkdirSync(join(hsmDir, "tokens"), { recursive: true, mode: 0o700 });
  writeFileSync(softhsmConf, `directories.tokendir = ${join(hsmDir, "tokens")}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  writeFileSync(pinFile, "1234\n", { mode: 0o600 });
  const init = spawnSync("softhsm2-util", ["--init-token", "--free", "--label", "hallmark", "--pin", "1234", "--so-pin", "5678"], {
    env: { ...process.env, SOFTHSM2_CONF: softhsmConf },
    encoding: "utf8",
  });
  if (init.status !== 0) throw new Error(`softhsm2-util failed: ${init.stderr}`);
  dataDir = join(work.path, "data");
  mkdirSync(dataDir, { mode: 0o700 });
  server = startWorkers();
  await server.ready;
  url = /listening on (https:\/\/\S+) \(admin socket \S+\)/.exec(server.stderr())![1]!;
  node = await freshNode();
  await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: WORKLOAD, selectors: [] });
}, 30_000);

afterAll(async () => {
  await server?.stop("SIGKILL");
  work.remove();
});

describe("hallmark server --workers 2 (SQLite)", () => {
  it("prints the listening line once and runs two workers under the primary", () => {
    expect(server.stderr().match(/hallmark server listening on/g)).toHaveLength(1);
    expect(workerPids(server.pid)).toHaveLength(2);
    // Each worker issued its own server certificate at start (and audited it).
    expect(query<{ n: number }>("SELECT COUNT(*) AS n FROM audit_log WHERE event = 'issue_server_svid'")[0]!.n).toBeGreaterThanOrEqual(2);
  });

  it("issues from both workers at once: unique serials, one audit chain in one order, a consistent transparency log", async () => {
    const issued = await Promise.all(Array.from({ length: 60 }, () => issueX509()));
    // Both workers served: two server certificates answered.
    expect(new Set(issued.map((i) => i.serverSerial)).size).toBeGreaterThanOrEqual(2);
    const serials = issued.map((i) => i.serial);
    expect(new Set(serials).size).toBe(serials.length);
    // Each serial once in the store (which keeps it normalised) and once in the audit log.
    const marks = serials.map(() => "?").join(",");
    expect(query<{ n: number }>(`SELECT COUNT(*) AS n FROM issued_svids WHERE serial IN (${marks})`, ...serials.map(normalizeSerial))[0]!.n).toBe(serials.length);
    expect(query<{ n: number }>(`SELECT COUNT(*) AS n FROM audit_log WHERE event = 'issue_x509' AND serial IN (${marks})`, ...serials)[0]!.n).toBe(serials.length);
    // One order: seq runs 1..N with no gap, and the chain and the tree recomputed from it verify.
    const { n, first, last } = query<{ n: number; first: number; last: number }>("SELECT COUNT(*) AS n, MIN(seq) AS first, MAX(seq) AS last FROM audit_log")[0]!;
    expect([first, last]).toEqual([1, n]);
    const verified = (await admin("GET", "/admin/audit/verify")) as { ok: boolean; records: number; tree?: { size: number } };
    expect(verified.ok).toBe(true);
    expect(verified.records).toBeGreaterThanOrEqual(n);
  });

  it("an entry created through the admin socket (worker 0) answers long polls held on both workers", async () => {
    const first = await call("GET", "/v1/node/entries");
    const revision = first.body.revision as number;
    // Connections alternate between the workers: four polls, both workers hold some.
    const polls = Array.from({ length: 4 }, () => call("GET", `/v1/node/entries?since=${revision}&wait=20`));
    await new Promise((r) => setTimeout(r, 500));
    const created = (await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/w/heard", selectors: [] })) as { id: string };
    const answers = await Promise.all(polls);
    expect(new Set(answers.map((a) => a.serverSerial)).size).toBe(2);
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.body.changes).toEqual([expect.objectContaining({ op: "created", entry: expect.objectContaining({ id: created.id }) })]);
    }
  });

  it("takes each scheduled rotation step once across the workers: one new key in the HSM and the store, and both sign with it", async () => {
    const steps = () =>
      query<{ details: string }>("SELECT details FROM audit_log WHERE event = 'ca_key_change' ORDER BY seq").map(
        (r) => JSON.parse(r.details) as { step: string; kind: string; keyId: string; trigger: string },
      );
    await waitFor(() => steps().some((s) => s.trigger === "schedule" && s.step === "activate" && s.kind === "x509"), "the scheduled x509 activation", 25_000);
    const scheduled = steps().filter((s) => s.trigger === "schedule" && s.kind === "x509");
    expect(scheduled.map((s) => s.step)).toEqual(["prepare", "activate"]);
    const names = steps().map((s) => `${s.step} ${s.kind} ${s.keyId}`);
    expect(new Set(names).size).toBe(names.length);
    const keys = query<{ id: string; label: string; status: string }>("SELECT id, label, status FROM ca_keys WHERE kind = 'x509' ORDER BY created_at");
    expect(keys.map((k) => k.status)).toEqual(["previous", "active"]);
    // The HSM holds exactly these two x509 keys: no worker made a key the other then lost.
    expect(hsmKeyLabels("x509").sort()).toEqual(keys.map((k) => k.label).sort());
    const active = keys[1]!;
    // Both workers sign with the new key: the store says so, and the signature verifies with its certificate.
    const activeCa = new X509Certificate(query<{ certificate: Buffer }>("SELECT certificate FROM ca_keys WHERE id = ?", active.id)[0]!.certificate);
    const issued = await Promise.all(Array.from({ length: 8 }, () => issueX509()));
    expect(new Set(issued.map((i) => i.serverSerial)).size).toBeGreaterThanOrEqual(2);
    for (const i of issued) {
      const ids = query<{ ca_key_id: string }>("SELECT ca_key_id FROM issued_svids WHERE serial = ?", normalizeSerial(i.serial));
      expect(ids).toEqual([{ ca_key_id: active.id }]);
      expect(new X509Certificate(i.leafPem).verify(activeCa.publicKey)).toBe(true);
    }
  }, 30_000);

  it("replaces a worker killed with SIGKILL; the other serves meanwhile, and nothing is half-written", async () => {
    // The rotation above took most of the first CA key's 16 s: an SVID and a bundle of the key active now.
    node = await freshNode();
    const before = workerPids(server.pid);
    const victim = before[1]!;
    process.kill(victim, "SIGKILL");
    // Reaped by the primary: cluster hands it no more connections.
    await waitFor(() => !existsSync(`/proc/${victim}`), "the killed worker reaped");
    // Issuance goes on (connections the dead worker would have had go to the live one).
    const during = await Promise.all(Array.from({ length: 6 }, () => issueX509()));
    expect(during).toHaveLength(6);
    await waitFor(() => workerPids(server.pid).length === 2 && !workerPids(server.pid).includes(victim), "a replacement worker", 20_000);
    // The replacement serves once it has started: two server certificates answer again.
    const seen = new Set<string>();
    const until = Date.now() + 15_000;
    while (seen.size < 2 && Date.now() < until) {
      for (const r of await Promise.all([call("GET", "/v1/node/entries"), call("GET", "/v1/node/entries")])) seen.add(r.serverSerial);
      if (seen.size < 2) await new Promise((r) => setTimeout(r, 200));
    }
    // At least two: the survivor may have renewed its certificate meanwhile (the CA keys rotate every few seconds here).
    expect(seen.size).toBeGreaterThanOrEqual(2);
    const verified = (await admin("GET", "/admin/audit/verify")) as { ok: boolean };
    expect(verified.ok).toBe(true);
    const orphans = query<{ n: number }>("SELECT COUNT(*) AS n FROM issued_svids s WHERE s.kind = 'x509' AND NOT EXISTS (SELECT 1 FROM audit_log a WHERE ltrim(lower(a.serial), '0') = s.serial)")[0]!.n;
    expect(orphans).toBe(0);
  }, 30_000);

  it("SIGTERM to the primary stops every worker, exits 0, and frees the data directory", async () => {
    const workers = workerPids(server.pid);
    expect(await server.stop("SIGTERM")).toBe(0);
    for (const pid of workers) expect(existsSync(`/proc/${pid}`)).toBe(false);
    // The data directory is free: a new server (one process) starts on it.
    const next = startServerProcess(dataDir, { args: ["--config", writeConfig("plain", {})], env: { SOFTHSM2_CONF: softhsmConf } });
    await next.ready;
    expect(await next.stop("SIGTERM")).toBe(0);
  }, 30_000);

  it("a bad configuration with --workers 2: one readable line, a non-zero exit, no restart loop", async () => {
    // Caught by a worker (the PIN file is read when the HSM opens), not by the primary's config check.
    const bad = startServerProcess(dataDir, {
      args: ["--workers", "2", "--config", writeConfig("bad", { hsm: { modulePath: findSoftHsmModule(), tokenLabel: "hallmark", pinFile: join(work.path, "missing.pin"), softhsmAutoInit: false } })],
      env: { SOFTHSM2_CONF: softhsmConf },
    });
    bad.ready.catch(() => undefined);
    const code = await bad.exited;
    expect(code).toBe(1);
    const lines = bad.stderr().trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^hallmark: config_invalid: .*missing\.pin/);
  }, 20_000);
});
