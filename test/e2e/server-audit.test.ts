import { join } from "node:path";
import { connect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { AuditRecord, Store } from "../../src/store/types.js";
import { runCli } from "../helpers/cli.js";
import { type TestServer, startTestServer } from "../helpers/server.js";

/**
 * What the server does on its own is audited like what it is asked to do: its own X509-SVID at
 * start and at every refresh, and the CA key steps no administrator asked for (the first keys,
 * scheduled rotation). The records are read from the database the server writes, through a second
 * connection, as an auditor would.
 */
const CA_TTL = 365 * 86400;
let server: TestServer;
let store: Store;
/** Added to the wall clock the server reads: moving it moves the CA keys' age for the rotation schedule. */
let clockOffsetMs = 0;

const records = async (): Promise<AuditRecord[]> => store.audit.list(0, 10_000);
const ofEvent = async (event: string) => (await records()).filter((r) => r.event === event);

/** Polls the audit log until `count` records of `event` are in it (the server appends them asynchronously). */
async function awaitRecords(event: string, count: number): Promise<AuditRecord[]> {
  for (let i = 0; i < 200; i++) {
    const found = await ofEvent(event);
    if (found.length >= count) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
  return ofEvent(event);
}

const presentedSerial = (url: string) =>
  new Promise<string>((resolve, reject) => {
    const u = new URL(url);
    const s = connect({ host: u.hostname, port: Number(u.port), rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().serialNumber.toLowerCase());
      s.end();
    });
    s.on("error", reject);
  });

beforeAll(async () => {
  server = await startTestServer({
    clock: () => new Date(Date.now() + clockOffsetMs),
    overrides: { ca: { keyType: "ec-p256", ttl: CA_TTL, rotation: { prepareAt: 0.5, activateAt: 0.75, checkInterval: 1 } } },
  });
  store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
}, 60_000);

afterAll(async () => {
  await store?.close();
  await server?.destroy();
});

describe("audit of what the server does on its own", () => {
  it("records the first CA keys and the server's own SVID at start, keys first", async () => {
    const all = await records();
    const keySteps = all.filter((r) => r.event === "ca_key_change");
    expect(keySteps.map((r) => [r.actor, r.outcome, r.details.kind, r.details.step, r.details.trigger])).toEqual([
      ["server", "success", "x509", "prepare", "start"],
      ["server", "success", "x509", "activate", "start"],
      ["server", "success", "jwt", "prepare", "start"],
      ["server", "success", "jwt", "activate", "start"],
      ["server", "success", "wit", "prepare", "start"],
      ["server", "success", "wit", "activate", "start"],
      ["server", "success", "token", "prepare", "start"],
      ["server", "success", "token", "activate", "start"],
    ]);
    const keys = JSON.parse((await runCli(["ca", "show", "--json", "--data-dir", server.dataDir])).stdout) as { keys: Array<{ id: string; status: string }> };
    expect(keySteps.filter((r) => r.details.step === "activate").map((r) => r.details.keyId).sort()).toEqual(
      keys.keys.filter((k) => k.status === "active").map((k) => k.id).sort(),
    );
    const svids = all.filter((r) => r.event === "issue_server_svid");
    expect(svids).toHaveLength(1);
    expect(svids[0]).toMatchObject({ actor: "server", outcome: "success", spiffeId: "spiffe://example.org/hallmark/server", details: { reason: "start" } });
    expect(svids[0]!.details.ipAddresses).toEqual(["127.0.0.1"]);
    expect(svids[0]!.serial).toBe(await presentedSerial(server.url));
    expect(all.indexOf(svids[0]!)).toBeGreaterThan(all.indexOf(keySteps[7]!));
  });

  it("records each refresh of the server's SVID, and an administrator's key step once, as the administrator's", async () => {
    expect((await runCli(["ca", "rotate", "--step", "prepare", "--data-dir", server.dataDir])).code).toBe(0);
    const svids = await awaitRecords("issue_server_svid", 2);
    expect(svids).toHaveLength(2);
    expect(svids[1]).toMatchObject({ actor: "server", outcome: "success", details: { reason: "bundle_changed" } });
    expect(svids[1]!.serial).not.toBe(svids[0]!.serial);
    expect((await ofEvent("ca_rotate")).map((r) => [r.actor, r.details.step])).toEqual([["admin:socket", "prepare"]]);
    expect(await ofEvent("ca_key_change")).toHaveLength(8);
  });

  it("records the steps of a scheduled rotation with the schedule as their trigger", async () => {
    // 80% of the keys' life has passed: past activateAt. x509 has a prepared key (the test above); jwt, wit and token have none.
    clockOffsetMs = 0.8 * CA_TTL * 1000;
    const steps = (await awaitRecords("ca_key_change", 15)).slice(8);
    expect(steps.map((r) => [r.actor, r.details.kind, r.details.step, r.details.trigger])).toEqual([
      ["server", "x509", "activate", "schedule"],
      ["server", "jwt", "prepare", "schedule"],
      ["server", "jwt", "activate", "schedule"],
      ["server", "wit", "prepare", "schedule"],
      ["server", "wit", "activate", "schedule"],
      ["server", "token", "prepare", "schedule"],
      ["server", "token", "activate", "schedule"],
    ]);
    // Each change of the bundle reissued the server's SVID, and the chain of records still verifies.
    expect((await awaitRecords("issue_server_svid", 3)).length).toBeGreaterThanOrEqual(3);
    const verify = await runCli(["audit", "verify", "--data-dir", server.dataDir]);
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/^audit log intact/m);
  });
});
