import { afterAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { NodeClient } from "../../src/client/node.js";
import { runCli } from "../helpers/cli.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

const data = tempDir("lifecycle");
let server: TestServer | undefined;
afterAll(async () => {
  await server?.close();
  data.remove();
});

const bundleOf = async (s: TestServer) => (expectOk(await adminRequest(s.adminSocket, "GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;

describe("server lifecycle", () => {
  it("comes back after a restart with the same CA, token and database", async () => {
    server = await startTestServer({ dataDir: data.path });
    const before = await bundleOf(server);
    expectOk(await adminRequest(server.adminSocket, "POST", "/admin/entries", { spiffe_id: "spiffe://example.org/kept", parent_id: "spiffe://example.org/node", selectors: [] }));
    await server.close();
    server = await startTestServer({ dataDir: data.path });
    expect(await bundleOf(server)).toBe(before);
    const entries = expectOk(await adminRequest(server.adminSocket, "GET", "/admin/entries")) as { entries: unknown[] };
    expect(entries.entries).toHaveLength(1);
  });

  it("rotates the CA through the CLI while a node keeps working across the switch", async () => {
    const s = server!;
    const token = (expectOk(await adminRequest(s.adminSocket, "POST", "/admin/tokens", { spiffe_id: "spiffe://example.org/node", ttl_seconds: 600 })) as { token: string }).token;
    const svid = await attest({ server: s.url, tls: { trustBundlePem: await bundleOf(s) }, producer: joinTokenProducer(token) });
    const prep = await runCli(["ca", "rotate", "--step", "prepare", "--data-dir", s.dataDir]);
    expect(prep.code).toBe(0);
    expect(prep.stdout).toMatch(/^prepared x509 key/);
    const bundle = await bundleOf(s);
    expect(bundle.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    const act = await runCli(["ca", "rotate", "--step", "activate", "--data-dir", s.dataDir]);
    expect(act.code).toBe(0);
    const again = await runCli(["ca", "rotate", "--step", "activate", "--data-dir", s.dataDir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^hallmark: ca_rotation_nothing_prepared: /);
    // The node's SVID from the old key still authenticates; new SVIDs come from the new key.
    const client = new NodeClient(s.url, { certPem: svid.certChainPem, keyPem: svid.privateKeyPem!, trustBundlePem: bundle });
    try {
      const renewed = await client.renew();
      expect(renewed.spiffeId).toBe("spiffe://example.org/node");
    } finally {
      client.close();
    }
    const show = await runCli(["ca", "show", "--data-dir", s.dataDir, "--json"]);
    const keys = (JSON.parse(show.stdout) as { keys: Array<{ kind: string; status: string }> }).keys.filter((k) => k.kind === "x509");
    expect(keys.map((k) => k.status).sort()).toEqual(["active", "previous"]);
  });

  it("refuses to start with a wrong HSM PIN, in one line and exit 1, never printing the PIN", async () => {
    await server!.close();
    server = undefined;
    const r = await runCli(["server", "--data-dir", data.path, "--listen", "127.0.0.1:0"], { HALLMARK_HSM_PIN: "definitely-wrong-pin", HALLMARK_LOG_LEVEL: "silent" });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^hallmark: hsm_login_failed: /);
    expect(r.stderr + r.stdout).not.toContain("definitely-wrong-pin");
  });

  it("refuses a bad config file in one line per field and exit 1", async () => {
    const cfg = join(data.path, "bad.yaml");
    writeFileSync(cfg, "svid:\n  x509Ttl: soon\n");
    const r = await runCli(["server", "--config", cfg, "--data-dir", data.path]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`hallmark: config_invalid: ${cfg}: svid.x509Ttl: 'soon' is not a duration (e.g. 90s, 10m, 1h, 30d)`);
  });
});
