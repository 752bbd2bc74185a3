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
  it("creates the RSA EK from the TCG L-1 template: the same key swtpm_setup persisted and certified", async () => {
    const { TpmClient } = await import("../../../src/tpm/client.js");
    const client = await TpmClient.open(tpm.tcti);
    try {
      const created = await client.createEk("rsa2048");
      expect(created.public.equals(await client.readPublic(0x81010001))).toBe(true);
      await client.flush(created.handle);
      await expect(client.readPublic(0x81000999)).rejects.toMatchObject({ code: "tpm_command_failed", message: expect.stringMatching(/TPM_RC_/) });
    } finally {
      await client.close();
    }
  });

  it("attests with an ECC P-256 EK created from the TCG L-2 template, admitted by its hash (swtpm certifies none)", async () => {
    const { TpmClient } = await import("../../../src/tpm/client.js");
    const { decodeTpm2bPublic } = await import("../../../src/tpm/structures.js");
    const { spkiOf } = await import("../../../src/tpm/keys.js");
    const { sha256Fingerprint } = await import("../../../src/pki/certificate.js");
    const { createTpmAttestor } = await import("../../../src/attestors/tpm/attestor.js");
    const { TrustDomain } = await import("../../../src/spiffe/id.js");
    const client = await TpmClient.open(tpm.tcti);
    const ek = await client.createEk("ecc-p256");
    await client.flush(ek.handle);
    await client.close();
    const ekHash = sha256Fingerprint(spkiOf(decodeTpm2bPublic(ek.public)));
    const attestor = createTpmAttestor({ trustedEkHashes: [ekHash], pcrPolicy: {}, idTemplate: "/p256/{ek_pubhash}" });
    const producer = createTpmEvidenceProducer({ tpm: tpm.tcti, ek: "ecc-p256", pcrs: [7] });
    const nonce = Buffer.alloc(32, 6);
    const spki = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004" + "33".repeat(64), "hex");
    const ctx = { trustDomain: TrustDomain.parse("example.org"), sessionId: "s", nonce, boundKeySpki: spki, now: new Date() };
    try {
      const step = await attestor.attest(await producer.evidence({ nonce, spki }), ctx);
      if (step.kind !== "challenge") throw new Error("expected a challenge");
      const done = await attestor.answer!(step.state, await producer.answer!(step.challenge), ctx);
      expect(done.kind === "attested" && done.result.agentId.toString()).toBe(`spiffe://example.org/p256/${ekHash}`);
    } finally {
      await producer.close?.();
    }
  });

  it("refuses an EK whose attributes are not a restricted decryption key bound to the TPM, before anything else", async () => {
    const { createTpmAttestor } = await import("../../../src/attestors/tpm/attestor.js");
    const { TPMA_OBJECT } = await import("../../../src/tpm/constants.js");
    const { TrustDomain } = await import("../../../src/spiffe/id.js");
    const attestor = createTpmAttestor({ ekRoots: [join(work.path, "root.pem")], pcrPolicy: {}, idTemplate: "/ek/{ek_pubhash}" });
    const producer = createTpmEvidenceProducer({ tpm: tpm.tcti, ek: "rsa2048", pcrs: [7] });
    const nonce = Buffer.alloc(32, 7);
    const spki = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004" + "44".repeat(64), "hex");
    const ctx = { trustDomain: TrustDomain.parse("example.org"), sessionId: "s", nonce, boundKeySpki: spki, now: new Date() };
    try {
      const evidence = (await producer.evidence({ nonce, spki })) as Record<string, string>;
      // TPM2B_PUBLIC: size (2), type (2), nameAlg (2), then objectAttributes (4, big-endian).
      const withAttributes = (change: (a: number) => number) => {
        const ek = Buffer.from(evidence.ek_public!, "base64");
        ek.writeUInt32BE(change(ek.readUInt32BE(6)) >>> 0, 6);
        return { ...evidence, ek_public: ek.toString("base64") };
      };
      for (const change of [
        (a: number) => a | TPMA_OBJECT.sign,
        (a: number) => a & ~TPMA_OBJECT.restricted,
        (a: number) => a & ~TPMA_OBJECT.decrypt,
        (a: number) => a & ~TPMA_OBJECT.fixedTPM,
      ]) {
        await expect(attestor.attest(withAttributes(change), ctx)).rejects.toMatchObject({ code: "tpm_ek_attributes" });
      }
      // The untouched EK gets past this check (to the credential-activation round).
      expect((await attestor.attest(evidence, ctx)).kind).toBe("challenge");
    } finally {
      await producer.close?.();
    }
  });

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

  it("certifies a TPM-resident SVID key (TPM2_Certify by the AK, CSR signed in the TPM): no svid.key is written", async () => {
    const out = join(work.path, "resident");
    const r = await runCli(["attest", "--server", server.url, "--trust-bundle", join(work.path, "bundle.pem"), "--attestor", "tpm", "--tpm", tpm.tcti, "--tpm-key-resident", "--out", out, "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).selectors).toContain("tpm:key_resident:true");
    const { existsSync, statSync } = await import("node:fs");
    expect(existsSync(join(out, "svid.key"))).toBe(false);
    expect(statSync(join(out, "svid.tpmkey")).mode & 0o777).toBe(0o600);
    const blob = JSON.parse(readFileSync(join(out, "svid.tpmkey"), "utf8")) as { public: string };
    const { decodeTpm2bPublic } = await import("../../../src/tpm/structures.js");
    const { spkiOf } = await import("../../../src/tpm/keys.js");
    const leaf = new X509Certificate(readFileSync(join(out, "svid.pem")));
    expect(leaf.publicKey.export({ type: "spki", format: "der" }).equals(spkiOf(decodeTpm2bPublic(Buffer.from(blob.public, "base64"))))).toBe(true);
  });

  it("refuses a software key when policy requires a TPM-resident one, and a certification of another key", async () => {
    const { createTpmAttestor } = await import("../../../src/attestors/tpm/attestor.js");
    const { TrustDomain } = await import("../../../src/spiffe/id.js");
    const strict = createTpmAttestor({ ekRoots: [join(work.path, "root.pem")], requireKeyResident: true });
    const nonce = Buffer.alloc(32, 5);
    const software = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004" + "55".repeat(64), "hex");
    const ctx = { trustDomain: TrustDomain.parse("example.org"), sessionId: "s", nonce, boundKeySpki: software, now: new Date() };
    const plain = createTpmEvidenceProducer({ tpm: tpm.tcti, pcrs: [7] });
    try {
      await expect(strict.attest(await plain.evidence({ nonce, spki: software }), ctx)).rejects.toMatchObject({ code: "tpm_key_not_resident" });
    } finally {
      await plain.close?.();
    }
    const resident = createTpmEvidenceProducer({ tpm: tpm.tcti, pcrs: [7], keyResident: true });
    try {
      const key = await resident.key!();
      // Evidence certifying the TPM key, presented for a CSR with another (software) key.
      const evidence = await resident.evidence({ nonce, spki: software });
      await expect(strict.attest(evidence, ctx)).rejects.toMatchObject({ code: "tpm_certify_key_mismatch" });
      // And evidence made for the TPM key is admitted for it.
      const honest = await resident.evidence({ nonce, spki: key.spki });
      expect((await strict.attest(honest, { ...ctx, boundKeySpki: key.spki })).kind).toBe("challenge");
    } finally {
      await resident.close?.();
    }
  });
});
