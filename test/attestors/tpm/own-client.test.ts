import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { createTpmEvidenceProducer } from "../../../src/attestors/tpm/producer.js";
import { adminRequest, expectOk } from "../../../src/client/http.js";
import { runCli, run } from "../../helpers/cli.js";
import { startSwtpm, type Swtpm } from "../../helpers/swtpm.js";
import { startTestServer, type TestServer } from "../../helpers/server.js";
import { tempDir } from "../../helpers/tmp.js";
import { attest } from "../../../src/client/attest.js";

let tpm: Swtpm;
let server: TestServer;
const work = tempDir("tpm-client");

beforeAll(async () => {
  tpm = await startSwtpm();
  writeFileSync(join(work.path, "root.pem"), tpm.rootCertPem + tpm.issuerCertPem);
  server = await startTestServer({ overrides: { attestors: { tpm: { ekRoots: [join(work.path, "root.pem")], pcrPolicy: { sha256: { "7": "00".repeat(32) } }, idTemplate: "/hallmark/agent/tpm/node-1" } } } });
  writeFileSync(join(work.path, "bundle.pem"), (expectOk(await adminRequest(server.adminSocket, "GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem);
}, 60_000);
afterAll(async () => {
  await server?.destroy();
  await tpm?.stop();
  work.remove();
});

describe("TPM attestation with Hallmark's own TPM client (swtpm TCP transport)", () => {
  it("attests through `hallmark attest --attestor tpm --tpm swtpm:…` and writes an SVID openssl verifies", async () => {
    const out = join(work.path, "node");
    const r = await runCli(["attest", "--server", server.url, "--trust-bundle", join(work.path, "bundle.pem"), "--attestor", "tpm", "--tpm", tpm.tcti, "--out", out, "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout) as { spiffe_id: string; selectors: string[] };
    expect(summary.spiffe_id).toBe("spiffe://example.org/hallmark/agent/tpm/node-1");
    expect(summary.selectors).toContain(`tpm:pcr:sha256:7:${"00".repeat(32)}`);
    const v = await run("openssl", ["verify", "-CAfile", join(out, "bundle.pem"), "-untrusted", join(out, "svid.pem"), join(out, "svid.pem")]);
    expect(v.stdout).toContain(": OK");
    expect(new X509Certificate(await import("node:fs").then((f) => f.readFileSync(join(out, "svid.pem")))).subjectAltName).toBe(`URI:${summary.spiffe_id}`);
  });

  it("refuses renewal by SVID (a fresh quote is required), and re-attests with the same EK", async () => {
    const out = join(work.path, "node");
    const r = await runCli(["renew", "--server", server.url, "--svid", join(out, "svid.pem"), "--key", join(out, "svid.key"), "--trust-bundle", join(work.path, "bundle.pem"), "--out", join(work.path, "renewed")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^hallmark: reattestation_required: /);
    const again = await attest({ server: server.url, tls: { trustBundlePem: readFileSync(join(work.path, "bundle.pem"), "utf8") }, producer: createTpmEvidenceProducer({ tpm: tpm.tcti }) });
    expect(again.spiffeId).toBe("spiffe://example.org/hallmark/agent/tpm/node-1");
  });

  it("refuses the same node ID from another EK (the ECC P-384 EK of this TPM stands in for a swapped chip)", async () => {
    const producer = createTpmEvidenceProducer({ tpm: tpm.tcti, ek: "ecc-p384" });
    await expect(attest({ server: server.url, tls: { trustBundlePem: readFileSync(join(work.path, "bundle.pem"), "utf8") }, producer })).rejects.toMatchObject({ code: "hardware_identity_changed" });
  });
});
