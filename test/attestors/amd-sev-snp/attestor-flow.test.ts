import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { attest } from "../../../src/client/attest.js";
import { adminRequest, expectOk } from "../../../src/client/http.js";
import { BINDING_DOMAINS, keyBindingCommitment } from "../../../src/attestors/binding.js";
import { certificateFromTable } from "../../../src/attestors/amd-sev-snp/producer.js";
import type { EvidenceProducer } from "../../../src/attestors/types.js";
import { type Product, decodeTcb, parseSnpReport } from "../../../src/attestors/amd-sev-snp/report.js";
import { checkSnpPolicy, snpAttestorConfigSchema } from "../../../src/attestors/amd-sev-snp/attestor.js";
import { type FakeAmd, type ReportFields, fakeAmd, signReport } from "../../helpers/snp.js";
import { startTestServer, type TestServer } from "../../helpers/server.js";
import { tempDir } from "../../helpers/tmp.js";

let server: TestServer;
let bundlePem: string;
const pkis: Partial<Record<string, FakeAmd>> = {};
const files = tempDir("snp-roots");
const MEASUREMENT = Buffer.alloc(48, 0x11);

beforeAll(async () => {
  pkis.Milan = await fakeAmd({ product: "Milan" });
  pkis.Genoa = await fakeAmd({ product: "Genoa" });
  pkis.Turin = await fakeAmd({ product: "Turin" });
  pkis.VlekMilan = await fakeAmd({ product: "Milan", kind: "VLEK" });
  const chainFiles = Object.entries(pkis).map(([name, p]) => {
    const f = join(files.path, `${name}.pem`);
    writeFileSync(f, p!.ask.cert.toString("pem") + p!.ark.cert.toString("pem"));
    return f;
  });
  server = await startTestServer({
    overrides: {
      attestors: {
        amd_sev_snp: {
          chainFiles,
          measurements: [MEASUREMENT.toString("hex")],
          hostData: [Buffer.alloc(32, 0x22).toString("hex")],
          minTcb: { bootloader: 2, snp: 8, microcode: 100 },
          minGuestSvn: 1,
          vmpls: [0],
          idKeyDigests: [Buffer.alloc(48, 0x33).toString("hex")],
        },
      },
    },
  });
  bundlePem = (expectOk(await adminRequest(server.adminSocket, "GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
});
afterAll(async () => {
  await server?.destroy();
  files.remove();
});

function guest(pki: FakeAmd, fields: (binding: { reportData: Buffer }) => ReportFields = (b) => b, extra: { vcek?: Buffer } = {}): EvidenceProducer {
  return {
    type: "amd_sev_snp",
    async evidence({ nonce, spki }) {
      const reportData = keyBindingCommitment("sha512", BINDING_DOMAINS.sevSnpReport, nonce, spki);
      const report = await signReport(pki, fields({ reportData }));
      return { report: report.toString("base64"), vcek: (extra.vcek ?? pki.signer.der).toString("base64") };
    },
  };
}

async function outcome(producer: EvidenceProducer): Promise<string> {
  try {
    await attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer });
    return "issued";
  } catch (e) {
    return (e as { code: string }).code;
  }
}

describe("amd_sev_snp attestation through the server", () => {
  it.each<[string, string]>([
    ["Milan", "VCEK"],
    ["Genoa", "VCEK"],
    ["Turin", "VCEK"],
    ["VlekMilan", "VLEK"],
  ])("issues an SVID for a %s guest (%s) with selectors from the report", async (name, signer) => {
    const pki = pkis[name]!;
    const svid = await attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer: guest(pki) });
    expect(svid.spiffeId).toBe(`spiffe://example.org/hallmark/agent/amd_sev_snp/${pki.chipId.toString("hex").slice(0, 16)}`);
    expect(svid.selectors).toContain(`amd_sev_snp:measurement:${MEASUREMENT.toString("hex")}`);
    expect(svid.selectors).toContain(`amd_sev_snp:product:${pki.product as Product}`);
    expect(svid.selectors).toContain(`amd_sev_snp:signer:${signer}`);
    expect(svid.selectors).toContain("amd_sev_snp:policy:debug:false");
    expect(svid.selectors).toContain(`amd_sev_snp:tcb:snp:${pki.tcb.snp}`);
    if (pki.product === "Turin") expect(svid.selectors).toContain(`amd_sev_snp:tcb:fmc:${pki.tcb.fmc}`);
  });

  it.each<[string, (b: { reportData: Buffer }) => ReportFields]>([
    ["snp_report_data_mismatch", () => ({ reportData: Buffer.alloc(64, 9) })],
    ["snp_measurement_not_allowed", (b) => ({ ...b, measurement: Buffer.alloc(48, 0x99) })],
    ["snp_host_data_not_allowed", (b) => ({ ...b, hostData: Buffer.alloc(32) })],
    ["snp_debug_not_allowed", (b) => ({ ...b, policy: 0x30000n | (1n << 19n) })],
    ["snp_migrate_ma_not_allowed", (b) => ({ ...b, policy: 0x30000n | (1n << 18n) })],
    ["snp_vmpl_not_allowed", (b) => ({ ...b, vmpl: 2 })],
    ["snp_guest_svn_too_old", (b) => ({ ...b, guestSvn: 0 })],
    ["snp_id_key_not_allowed", (b) => ({ ...b, idKeyDigest: Buffer.alloc(48, 0x44) })],
    ["snp_tcb_mismatch", (b) => ({ ...b, tcb: { bootloader: 3, tee: 0, snp: 9, microcode: 115 } })],
    ["snp_signer_mismatch", (b) => ({ ...b, signingKey: 1 })],
  ])("refuses with %s", async (code, fields) => {
    expect(await outcome(guest(pkis.Milan!, fields))).toBe(code);
  });

  it.each(["bootloader", "tee", "snp", "microcode", "fmc"] as const)("refuses a %s TCB component below the policy minimum", async (component) => {
    const pki = pkis.Turin!;
    const report = parseSnpReport(await signReport(pki, {}));
    const tcb = decodeTcb(report.reportedTcbRaw, "Turin");
    const config = snpAttestorConfigSchema.parse({ minTcb: { [component]: (tcb[component] ?? 0) + 1 }, minGuestSvn: 0 });
    expect(() => checkSnpPolicy(report, tcb, config)).toThrowError(expect.objectContaining({ code: "snp_tcb_too_old" }));
    const ok = snpAttestorConfigSchema.parse({ minTcb: { [component]: tcb[component] ?? 0 } });
    expect(() => checkSnpPolicy(report, tcb, ok)).not.toThrow();
  });

  it("refuses a VLEK presented as a VCEK, a chip ID that is not the VCEK's, a chain to another root, and a Milan VCEK for a Genoa report", async () => {
    expect(await outcome(guest(pkis.Milan!, (b) => b, { vcek: pkis.VlekMilan!.signer.der }))).toBe("snp_signer_mismatch");
    const otherChip = { ...pkis.Milan!, chipId: Buffer.alloc(64, 5) };
    expect(await outcome(guest(otherChip))).toBe("snp_chip_id_mismatch");
    const stranger = await fakeAmd({ product: "Milan" });
    // Same names as the configured ASK, another key: the name matches, the signature does not.
    expect(await outcome(guest(stranger))).toBe("pki_signature_invalid");
    expect(await outcome(guest(pkis.Genoa!, (b) => b, { vcek: pkis.Milan!.signer.der }))).toBe("snp_product_mismatch");
  });

  it("refuses malformed evidence: truncated, oversized, reserved bits, unknown version", async () => {
    const raw = (mutate: (b: Buffer) => Buffer): EvidenceProducer => ({
      type: "amd_sev_snp",
      async evidence({ nonce, spki }) {
        const r = await signReport(pkis.Milan!, { reportData: keyBindingCommitment("sha512", BINDING_DOMAINS.sevSnpReport, nonce, spki) });
        return { report: mutate(r).toString("base64"), vcek: pkis.Milan!.signer.der.toString("base64") };
      },
    });
    expect(await outcome(raw((b) => b.subarray(0, 1000)))).toBe("snp_report_size");
    expect(await outcome(raw((b) => Buffer.concat([b, b])))).toBe("snp_report_size");
    expect(await outcome(raw((b) => (b.writeUInt8(1, 0x4c), b)))).toBe("snp_reserved_nonzero");
    expect(await outcome(raw((b) => (b.writeUInt32LE(7, 0), b)))).toBe("snp_unknown_version");
    expect(await outcome(raw((b) => (b.writeUInt8(b.readUInt8(0x95) ^ 1, 0x95), b)))).toBe("snp_signature_invalid");
    expect(await outcome({ type: "amd_sev_snp", evidence: async () => ({ report: "AAAA" }) })).toBe("snp_report_size");
  });

  it("reads the VCEK out of a SEV-SNP certificate table (auxblob)", () => {
    const vcek = pkis.Milan!.signer.der;
    const guid = Buffer.from("8d75da6364e66445adc5f4b93be8accd", "hex"); // 63da758d-e664-4564-adc5-f4b93be8accd, mixed-endian
    const table = Buffer.alloc(48 + vcek.length);
    guid.copy(table, 0);
    table.writeUInt32LE(48, 16);
    table.writeUInt32LE(vcek.length, 20);
    vcek.copy(table, 48);
    expect(certificateFromTable(table)?.equals(vcek)).toBe(true);
    expect(certificateFromTable(Buffer.alloc(48))).toBeUndefined();
  });
});

describe("VCEKs from the local cache", () => {
  it("finds the VCEK by chip ID and reported TCB when the evidence carries none, and says so when absent", async () => {
    const { createSnpAttestor } = await import("../../../src/attestors/amd-sev-snp/attestor.js");
    const { TrustDomain } = await import("../../../src/spiffe/id.js");
    const pki = pkis.Genoa!;
    const cache = tempDir("vcek-cache");
    const chain = join(cache.path, "chain.pem");
    writeFileSync(chain, pki.ask.cert.toString("pem") + pki.ark.cert.toString("pem"));
    try {
      const attestor = createSnpAttestor(snpAttestorConfigSchema.parse({ chainFiles: [chain], vcekCacheDir: cache.path, minGuestSvn: 0 }));
      const nonce = Buffer.alloc(32, 8);
      const spki = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004" + "44".repeat(64), "hex");
      const reportData = keyBindingCommitment("sha512", BINDING_DOMAINS.sevSnpReport, nonce, spki);
      const report = await signReport(pki, { reportData });
      const ctx = { trustDomain: TrustDomain.parse("example.org"), sessionId: "s", nonce, boundKeySpki: spki, now: new Date() };
      await expect(attestor.attest({ report: report.toString("base64") }, ctx)).rejects.toMatchObject({ code: "snp_vcek_missing" });
      const name = `${report.subarray(0x1a0, 0x1e0).toString("hex")}-${report.readBigUInt64LE(0x180).toString(16).padStart(16, "0")}.der`;
      writeFileSync(join(cache.path, name), pki.signer.der);
      const step = await attestor.attest({ report: report.toString("base64") }, ctx);
      expect(step.kind).toBe("attested");
    } finally {
      cache.remove();
    }
  });
});
