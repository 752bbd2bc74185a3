import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
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
  server = await startTestServer({ overrides: { attestors: { tpm: { ekRoots: [join(work.path, "root.pem")], pcrPolicy: { sha256: { "7": "00".repeat(32) } } } } } });
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
    expect(summary.spiffe_id).toMatch(/\/hallmark\/agent\/tpm\/[0-9a-f]{64}$/);
    expect(summary.selectors).toContain(`tpm:pcr:sha256:7:${"00".repeat(32)}`);
    const v = await run("openssl", ["verify", "-CAfile", join(out, "bundle.pem"), "-untrusted", join(out, "svid.pem"), join(out, "svid.pem")]);
    expect(v.stdout).toContain(": OK");
    expect(new X509Certificate(await import("node:fs").then((f) => f.readFileSync(join(out, "svid.pem")))).subjectAltName).toBe(`URI:${summary.spiffe_id}`);
  });

  it("attests again with the ECC P-384 EK: same TPM, another EK is another node", async () => {
    const svid = await attest({ server: server.url, tls: { trustBundlePem: (await import("node:fs")).readFileSync(join(work.path, "bundle.pem"), "utf8") }, producer: createTpmEvidenceProducer({ tpm: tpm.tcti, ek: "ecc-p384" }) });
    expect(svid.spiffeId).toMatch(/\/hallmark\/agent\/tpm\/[0-9a-f]{64}$/);
  });
});
