import { X509Certificate, createHash, generateKeyPairSync } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTpmAttestor } from "../../../src/attestors/tpm/attestor.js";
import { createTpmEvidenceProducer } from "../../../src/attestors/tpm/producer.js";
import type { Attestor } from "../../../src/attestors/types.js";
import { TrustDomain } from "../../../src/spiffe/id.js";
import { TpmClient } from "../../../src/tpm/client.js";
import { spkiOf } from "../../../src/tpm/keys.js";
import { decodeTpm2bPublic } from "../../../src/tpm/structures.js";
import { run } from "../../helpers/cli.js";
import { type Swtpm, startSwtpm } from "../../helpers/swtpm.js";

/**
 * The ECC P-256 EK certificate at NV 0x01c0000a (TCG EK Credential Profile), which swtpm_setup
 * does not write. Here swtpm's own certificate tool, swtpm_localca, certifies the P-256 EK our
 * client creates, under the same local CA as the RSA and P-384 EKs, and tpm2-tools stores it in
 * NV; our producer then finds it there and the attestor chains it like any manufacturer's.
 */
const EK_CERT_P256_NV = "0x01c0000a";

let tpm: Swtpm;
let ekSpki: Buffer;
let ekRootsFile: string;

/** swtpm_localca's EK certificate for an EC P-256 point, as swtpm_setup would ask for one. */
async function localCaEkCert(x: Buffer, y: Buffer, out: string): Promise<Buffer> {
  mkdirSync(out, { recursive: true });
  const ca = join(tpm.dir, "ca");
  const r = await run("swtpm_localca", [
    "--type", "ek", "--ek", `x=${x.toString("hex")},y=${y.toString("hex")},id=secp256r1`, "--dir", out, "--tpm2",
    "--tpm-spec-family", "2.0", "--tpm-spec-revision", "164", "--tpm-spec-level", "0",
    "--tpm-manufacturer", "id:00001014", "--tpm-model", "swtpm", "--tpm-version", "id:20191023",
    "--configfile", join(ca, "swtpm-localca.conf"), "--optsfile", join(ca, "swtpm-localca.options"),
    "--logfile", join(out, "localca.log"),
  ]);
  if (r.code !== 0) throw new Error(`swtpm_localca failed: ${r.stderr}${readFileSync(join(out, "localca.log"), "utf8")}`);
  return readFileSync(join(out, "ek.cert"));
}

/** Replaces the certificate at 0x01c0000a, with owner authorisation as a provisioning tool would. */
async function writeEkCertNv(der: Buffer): Promise<void> {
  const file = join(tpm.dir, "ek-p256.der");
  writeFileSync(file, der);
  await tpm.tpm2("tpm2_nvundefine", [EK_CERT_P256_NV, "-C", "o"]).catch(() => undefined);
  await tpm.tpm2("tpm2_nvdefine", [EK_CERT_P256_NV, "-C", "o", "-s", String(der.length), "-a", "ownerread|ownerwrite|authread|authwrite|no_da"]);
  await tpm.tpm2("tpm2_nvwrite", [EK_CERT_P256_NV, "-C", "o", "-i", file]);
}

/** A full attestation (evidence, credential activation) with the P-256 EK; the attested step or the refusal. */
async function attestP256(attestor: Attestor) {
  const producer = createTpmEvidenceProducer({ tpm: tpm.tcti, ek: "ecc-p256", pcrs: [7] });
  const nonce = Buffer.alloc(32, 9);
  const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = publicKey.export({ type: "spki", format: "der" });
  const ctx = { trustDomain: TrustDomain.parse("example.org"), sessionId: "s", nonce, boundKeySpki: spki, now: new Date() };
  try {
    const evidence = await producer.evidence({ nonce, spki });
    const step = await attestor.attest(evidence, ctx);
    if (step.kind !== "challenge") throw new Error("expected the credential-activation challenge");
    return { evidence, done: await attestor.answer!(step.state, await producer.answer!(step.challenge), ctx) };
  } finally {
    await producer.close?.();
  }
}

beforeAll(async () => {
  tpm = await startSwtpm();
  ekRootsFile = join(tpm.dir, "ek-roots.pem");
  writeFileSync(ekRootsFile, tpm.rootCertPem + tpm.issuerCertPem);
  const client = await TpmClient.open(tpm.tcti);
  try {
    const ek = await client.createEk("ecc-p256");
    await client.flush(ek.handle);
    ekSpki = spkiOf(decodeTpm2bPublic(ek.public));
  } finally {
    await client.close();
  }
}, 60_000);
afterAll(async () => {
  await tpm?.stop();
});

describe("ECC P-256 EK certificate at NV 0x01c0000a", () => {
  it("is read from NV, chains to the swtpm local CA, and names the EK and manufacturer in the selectors", async () => {
    // The uncompressed point is the last 64 bytes of a P-256 SubjectPublicKeyInfo.
    const point = ekSpki.subarray(ekSpki.length - 64);
    const der = await localCaEkCert(point.subarray(0, 32), point.subarray(32), join(tpm.dir, "ek-p256"));
    const cert = new X509Certificate(der);
    expect(cert.publicKey.export({ type: "spki", format: "der" }).equals(ekSpki)).toBe(true);
    await writeEkCertNv(der);

    const attestor = createTpmAttestor({ ekRoots: [ekRootsFile], pcrPolicy: {} });
    const { evidence, done } = await attestP256(attestor);
    expect(Buffer.from(String(evidence.ek_cert), "base64").equals(der)).toBe(true);
    if (done.kind !== "attested") throw new Error("expected an attested result");
    const ekHash = createHash("sha256").update(ekSpki).digest("hex");
    expect(done.result.selectors).toContain(`ek_pubhash:${ekHash}`);
    expect(done.result.selectors).toContain("manufacturer:id:00001014");
    expect(done.result.selectors.some((s) => s.startsWith("ek_cert_issuer:") && s.includes("swtpm-localca"))).toBe(true);
    expect(done.result.agentId.toString()).toBe(`spiffe://example.org/hallmark/agent/tpm/${ekHash}`);
  });

  it("refuses a P-256 certificate at 0x01c0000a for another key with tpm_ek_mismatch", async () => {
    const other = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });
    const point = other.subarray(other.length - 64);
    await writeEkCertNv(await localCaEkCert(point.subarray(0, 32), point.subarray(32), join(tpm.dir, "ek-other")));
    const attestor = createTpmAttestor({ ekRoots: [ekRootsFile], pcrPolicy: {} });
    await expect(attestP256(attestor)).rejects.toMatchObject({ code: "tpm_ek_mismatch" });
  });
});
