import { describe, expect, it } from "vitest";
import { X509Certificate } from "node:crypto";
import { pemBlocks } from "../../../src/pki/pem.js";
import { parseSnpReport } from "../../../src/attestors/amd-sev-snp/report.js";
import { verifySnpReport } from "../../../src/attestors/amd-sev-snp/verify.js";
import { haveSharedFixtures, sharedFixture, warnIfNoSharedFixtures } from "../../helpers/fixtures.js";

const REPORTS = [
  { name: "Milan v2", report: "milan-v2-report.bin", vcek: () => sharedFixture("amd-sev-snp/milan-v2-vcek.der"), product: "Milan", version: 2 },
  { name: "Genoa v3", report: "genoa-v3-report.bin", vcek: () => pemBlocks(sharedFixture("amd-sev-snp/genoa-v3-vcek.pem").toString())[0]!, product: "Genoa", version: 3 },
] as const;

const chainOf = (product: string) => pemBlocks(sharedFixture(`amd-sev-snp/cert_chain-vcek-${product}.pem`).toString());
/** Inside the VCEK's validity: the report carries no time of its own. */
const atOf = (vcek: Buffer) => new Date(new X509Certificate(vcek).validFrom).getTime() + 86400_000;

function outcome(bytes: Uint8Array, vcek: Buffer, product: string): string {
  try {
    const chain = chainOf(product);
    verifySnpReport(parseSnpReport(bytes), { signingCert: vcek, chain, anchors: [chain[1]!], at: new Date(atOf(vcek)) });
    return "ok";
  } catch (e) {
    if ((e as { name?: string }).name !== "HallmarkError") throw e;
    return (e as { code: string }).code;
  }
}

describe("real SEV-SNP reports", () => {
  warnIfNoSharedFixtures("real SEV-SNP reports");

  it.skipIf(!haveSharedFixtures).each(REPORTS)("$name verifies with its VCEK and the pinned ARK", ({ report, vcek, product, version }) => {
    const r = parseSnpReport(sharedFixture(`amd-sev-snp/${report}`));
    expect(r.version).toBe(version);
    const chain = chainOf(product);
    const v = verifySnpReport(r, { signingCert: vcek(), chain, anchors: [chain[1]!], at: new Date(atOf(vcek())) });
    expect(v).toMatchObject({ product, signer: "VCEK" });
  });

  it.skipIf(!haveSharedFixtures).each(REPORTS)("$name: every single-bit flip of the signed part and the signature is refused", ({ report, vcek, product }) => {
    const raw = sharedFixture(`amd-sev-snp/${report}`);
    const codes = new Set<string>();
    for (let i = 0; i < 0x330; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const b = Buffer.from(raw);
        b.writeUInt8(b.readUInt8(i) ^ (1 << bit), i);
        codes.add(outcome(b, vcek(), product));
      }
    }
    expect(codes.has("ok")).toBe(false);
    expect(codes.has("snp_signature_invalid")).toBe(true);
    expect(codes.has("snp_reserved_nonzero")).toBe(true);
    // 6,528 full verifications (P-384 signature and the VCEK chain): seconds alone, more when CI is busy.
  }, 180_000);

  it.skipIf(!haveSharedFixtures)("refuses a Milan VCEK for a Genoa report, a VLEK chain for a VCEK, truncation and unknown versions", () => {
    const genoa = sharedFixture("amd-sev-snp/genoa-v3-report.bin");
    const milanVcek = sharedFixture("amd-sev-snp/milan-v2-vcek.der");
    expect(outcome(genoa, milanVcek, "Genoa")).toBe("snp_product_mismatch");
    const milan = sharedFixture("amd-sev-snp/milan-v2-report.bin");
    const asvk = pemBlocks(sharedFixture("amd-sev-snp/cert_chain-vlek-Milan.pem").toString());
    expect(() => verifySnpReport(parseSnpReport(milan), { signingCert: asvk[0]!, chain: asvk, anchors: [asvk[1]!], at: new Date(atOf(milanVcek)) })).toThrowError(
      expect.objectContaining({ code: "snp_signer_mismatch" }),
    );
    expect(outcome(milan.subarray(0, 1000), milanVcek, "Milan")).toBe("snp_report_size");
    expect(outcome(Buffer.concat([milan, Buffer.alloc(1)]), milanVcek, "Milan")).toBe("snp_report_size");
    const v4 = Buffer.from(milan);
    v4.writeUInt32LE(4, 0);
    expect(outcome(v4, milanVcek, "Milan")).toBe("snp_unknown_version");
  });

  it.skipIf(!haveSharedFixtures)("refuses a VCEK outside its validity", () => {
    const milan = parseSnpReport(sharedFixture("amd-sev-snp/milan-v2-report.bin"));
    const vcek = sharedFixture("amd-sev-snp/milan-v2-vcek.der");
    const chain = chainOf("Milan");
    expect(() => verifySnpReport(milan, { signingCert: vcek, chain, anchors: [chain[1]!], at: new Date("2100-01-01") })).toThrowError(expect.objectContaining({ code: "pki_cert_expired" }));
  });
});
