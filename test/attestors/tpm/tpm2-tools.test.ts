import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { attest } from "../../../src/client/attest.js";
import { adminRequest, expectOk } from "../../../src/client/http.js";
import type { EvidenceProducer, JsonObject } from "../../../src/attestors/types.js";
import { startSwtpm, type Swtpm } from "../../helpers/swtpm.js";
import { tpm2ToolsNode } from "../../helpers/tpm2-tools-node.js";
import { startTestServer, type TestServer } from "../../helpers/server.js";
import { tempDir } from "../../helpers/tmp.js";

let tpmA: Swtpm;
let tpmB: Swtpm;
let server: TestServer;
let bundlePem: string;
const roots = tempDir("ek-roots");

beforeAll(async () => {
  [tpmA, tpmB] = await Promise.all([startSwtpm(), startSwtpm()]);
  // Only TPM A's manufacturer (its local CA) is trusted.
  writeFileSync(join(roots.path, "root.pem"), tpmA.rootCertPem);
  writeFileSync(join(roots.path, "issuer.pem"), tpmA.issuerCertPem);
  const zero = "00".repeat(32);
  server = await startTestServer({
    overrides: { attestors: { tpm: { ekRootsDir: roots.path, pcrPolicy: { sha256: { "0": zero, "1": [zero, "11".repeat(32)] } } } } },
  });
  bundlePem = (expectOk(await adminRequest(server.adminSocket, "GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
}, 60_000);
afterAll(async () => {
  await server?.destroy();
  await tpmA?.stop();
  await tpmB?.stop();
  roots.remove();
});

const run = (producer: EvidenceProducer) => attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer });
async function outcome(producer: EvidenceProducer): Promise<string> {
  try {
    await run(producer);
    return "issued";
  } catch (e) {
    return (e as { code: string }).code;
  }
}

describe("TPM attestation with tpm2-tools on swtpm (the README's worked example)", () => {
  it("attests an RSA-EK node: EK certificate, AK, quote, credential activation", async () => {
    const svid = await run(tpm2ToolsNode(tpmA));
    expect(svid.spiffeId).toMatch(/^spiffe:\/\/example\.org\/hallmark\/agent\/tpm\/[0-9a-f]{64}$/);
    expect(svid.selectors).toContain(`tpm:pcr:sha256:0:${"00".repeat(32)}`);
    expect(svid.selectors.some((s) => s.startsWith("tpm:ek_pubhash:"))).toBe(true);
    expect(svid.selectors.some((s) => s.startsWith("tpm:ek_cert_issuer:"))).toBe(true);
    expect(svid.selectors.some((s) => s.startsWith("tpm:manufacturer:"))).toBe(true);
  });

  it("attests an ECC P-384 EK node (swtpm's certified ECC EK, ECDH + KDFe credential)", async () => {
    const svid = await run(tpm2ToolsNode(tpmA, { ek: "ecc384" }));
    expect(svid.spiffeId).toMatch(/\/hallmark\/agent\/tpm\/[0-9a-f]{64}$/);
  });

  it("attests with an RSA AK (RSASSA) too", async () => {
    expect(await outcome(tpm2ToolsNode(tpmA, { akArgs: ["-G", "rsa", "-g", "sha256", "-s", "rsassa"] }))).toBe("issued");
  });

  it("refuses a quote over another nonce", async () => {
    expect(await outcome(tpm2ToolsNode(tpmA, { extraDataHex: () => "ab".repeat(32) }))).toBe("tpm_quote_nonce_mismatch");
  });

  it("refuses an EK certificate from an untrusted manufacturer", async () => {
    expect(await outcome(tpm2ToolsNode(tpmB))).toBe("tpm_ek_untrusted");
  });

  it("refuses an EK without a certificate that is not allow-listed", async () => {
    expect(await outcome(tpm2ToolsNode(tpmA, { ekCert: false }))).toBe("tpm_ek_missing_certificate");
  });

  it("refuses a wrong credential-activation answer", async () => {
    const node = tpm2ToolsNode(tpmA);
    expect(await outcome({ ...node, answer: async () => ({ secret: Buffer.alloc(32, 1).toString("base64") }) })).toBe("tpm_activation_failed");
  });

  it("refuses an AK and quote from another TPM presented with this TPM's EK", async () => {
    const a = tpm2ToolsNode(tpmA);
    const b = tpm2ToolsNode(tpmB);
    const mixed: EvidenceProducer = {
      type: "tpm",
      async evidence(binding) {
        const ea = await a.evidence(binding);
        const eb = await b.evidence(binding);
        return { ...eb, ek_public: ea.ek_public, ek_cert: ea.ek_cert } as JsonObject;
      },
      // TPM B cannot open a credential made for TPM A's EK.
      answer: async (c) => b.answer!(c).catch(() => ({ secret: Buffer.alloc(32).toString("base64") })),
    };
    expect(await outcome(mixed)).toBe("tpm_activation_failed");
  });

  it("refuses the next attestation after a PCR in the policy is extended", async () => {
    await tpmA.tpm2("tpm2_pcrextend", [`0:sha256=${"42".repeat(32)}`]);
    expect(await outcome(tpm2ToolsNode(tpmA))).toBe("tpm_pcr_policy_violation");
    expect(await outcome(tpm2ToolsNode(tpmA, { pcrs: "sha256:1,7" }))).toBe("tpm_pcr_missing");
  });

  it("refuses an AK that is not restricted", async () => {
    // A plain signing key under the EK is not an attestation key; tpm2-tools cannot make one
    // with tpm2_createak, so the AK public area is rewritten to drop `restricted`.
    const node = tpm2ToolsNode(tpmA, { pcrs: "sha256:0,1" });
    const tampered: EvidenceProducer = {
      ...node,
      async evidence(binding) {
        const e = await node.evidence(binding);
        const ak = Buffer.from(String(e.ak_public), "base64");
        ak.writeUInt8(ak.readUInt8(2 + 4 + 1) & ~0x01, 2 + 4 + 1); // objectAttributes bit 16 (restricted)
        return { ...e, ak_public: ak.toString("base64") };
      },
    };
    expect(await outcome(tampered)).toBe("tpm_ak_not_restricted");
  });
});

describe("an uncertified ECC P-256 EK (tpm2_createek -G ecc)", () => {
  it("is refused until its hash is allow-listed, then attests (ECDH P-256 + KDFe credential)", async () => {
    const { createTpmAttestor } = await import("../../../src/attestors/tpm/attestor.js");
    const { TrustDomain } = await import("../../../src/spiffe/id.js");
    const { spkiOf } = await import("../../../src/tpm/keys.js");
    const { decodeTpm2bPublic } = await import("../../../src/tpm/structures.js");
    const { sha256Fingerprint } = await import("../../../src/pki/certificate.js");
    const nonce = Buffer.alloc(32, 4);
    const spki = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004" + "22".repeat(64), "hex");
    const node = tpm2ToolsNode(tpmA, { ek: "ecc256", pcrs: "sha256:7" });
    const evidence = await node.evidence({ nonce, spki });
    const ctx = { trustDomain: TrustDomain.parse("example.org"), sessionId: "s", nonce, boundKeySpki: spki, now: new Date() };
    const strict = createTpmAttestor({ ekRootsDir: roots.path, trustedEkHashes: [], pcrPolicy: {}, idTemplate: "/t/{ek_pubhash}" });
    await expect(strict.attest(evidence, ctx)).rejects.toMatchObject({ code: "tpm_ek_missing_certificate" });
    const ekHash = sha256Fingerprint(spkiOf(decodeTpm2bPublic(Buffer.from(String(evidence.ek_public), "base64"))));
    const allowing = createTpmAttestor({ ekRootsDir: roots.path, trustedEkHashes: [ekHash], pcrPolicy: {}, idTemplate: "/t/{ek_pubhash}" });
    const step = await allowing.attest(evidence, ctx);
    if (step.kind !== "challenge") throw new Error("expected a challenge");
    const answer = await node.answer!(step.challenge);
    const done = await allowing.answer!(step.state, answer, ctx);
    expect(done.kind).toBe("attested");
    if (done.kind === "attested") expect(done.result.hardwareId).toBe(ekHash);
  });
});

describe("TPM evidence bytes under attack", () => {
  it("refuses every single-byte corruption of a real quote and its signature, never crashing", async () => {
    const { createTpmAttestor } = await import("../../../src/attestors/tpm/attestor.js");
    const { TrustDomain } = await import("../../../src/spiffe/id.js");
    const attestor = createTpmAttestor({ ekRootsDir: roots.path, trustedEkHashes: [], pcrPolicy: {}, idTemplate: "/t/{ek_pubhash}" });
    const nonce = Buffer.alloc(32, 3);
    const spki = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004" + "11".repeat(64), "hex");
    const evidence = await tpm2ToolsNode(tpmA, { pcrs: "sha256:1,7" }).evidence({ nonce, spki });
    const ctx = { trustDomain: TrustDomain.parse("example.org"), sessionId: "s", nonce, boundKeySpki: spki, now: new Date() };
    expect((await attestor.attest(evidence, ctx)).kind).toBe("challenge");
    const codes = new Set<string>();
    for (const field of ["quote", "quote_signature"] as const) {
      const raw = Buffer.from(String(evidence[field]), "base64");
      for (let i = 0; i < raw.length; i++) {
        const bad = Buffer.from(raw);
        bad.writeUInt8(bad.readUInt8(i) ^ 0x5a, i);
        try {
          await attestor.attest({ ...evidence, [field]: bad.toString("base64") }, ctx);
          codes.add("accepted");
        } catch (e) {
          expect((e as { name?: string }).name).toBe("HallmarkError");
          codes.add((e as { code: string }).code);
        }
      }
      for (let n = 0; n < raw.length; n += 3) {
        await expect(attestor.attest({ ...evidence, [field]: raw.subarray(0, n).toString("base64") || "AA==" }, ctx)).rejects.toMatchObject({ name: "HallmarkError" });
      }
      await expect(attestor.attest({ ...evidence, [field]: Buffer.concat([raw, Buffer.alloc(1)]).toString("base64") }, ctx)).rejects.toMatchObject({ name: "HallmarkError" });
    }
    expect(codes.has("accepted")).toBe(false);
    expect(codes.has("tpm_quote_signature_invalid")).toBe(true);
    expect(codes.has("tpm_quote_bad_magic")).toBe(true);
  });
});
