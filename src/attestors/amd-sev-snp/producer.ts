import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { HallmarkError } from "../../errors.js";
import { runEvidenceCommand } from "../aws-nitro/producer.js";
import { BINDING_DOMAINS, keyBindingCommitment } from "../binding.js";
import type { EvidenceProducer } from "../types.js";

const CONFIGFS_TSM = "/sys/kernel/config/tsm/report";
/** GUIDs of the SEV-SNP certificate table (GHCB specification, "Certificate table"). */
const VCEK_GUID = "63da758d-e664-4564-adc5-f4b93be8accd";
const VLEK_GUID = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";

/**
 * The guest side. report_data = SHA-512(domain || 0 || nonce || SHA-256(SPKI)); the report comes
 * from the Linux configfs-tsm interface when present (inblob in, outblob and auxblob out), else
 * from `evidenceCmd` (given HALLMARK_REPORT_DATA_HEX) or a report made beforehand. The VCEK comes
 * from the auxblob certificate table, or `vcek`.
 */
export function createSnpEvidenceProducer(o: {
  report?: Buffer | undefined;
  evidenceCmd?: string | undefined;
  vcek?: Buffer | undefined;
  configfsTsmPath?: string | undefined;
}): EvidenceProducer {
  const tsm = o.configfsTsmPath ?? CONFIGFS_TSM;
  if (!o.report && !o.evidenceCmd && !existsSync(tsm)) {
    throw new Error(`amd_sev_snp needs ${CONFIGFS_TSM} (a SEV-SNP guest), --evidence-cmd CMD or --evidence-file FILE`);
  }
  return {
    type: "amd_sev_snp",
    async evidence({ nonce, spki }) {
      const reportData = keyBindingCommitment("sha512", BINDING_DOMAINS.sevSnpReport, nonce, spki);
      let report: Buffer;
      let vcek: Buffer | undefined;
      if (o.evidenceCmd) report = await runEvidenceCommand(o.evidenceCmd, { nonce, spki, reportDataHex: reportData.toString("hex") });
      else if (o.report) report = o.report;
      else ({ report, vcek } = configfsReport(tsm, reportData));
      if (o.vcek) vcek = o.vcek;
      if (report.length !== 1184 && /^[A-Za-z0-9+/=\s]+$/.test(report.toString("ascii"))) report = Buffer.from(report.toString("ascii").trim(), "base64");
      return { report: report.toString("base64"), ...(vcek ? { vcek: vcek.toString("base64") } : {}) };
    },
  };
}

function configfsReport(root: string, reportData: Buffer): { report: Buffer; vcek?: Buffer | undefined } {
  const entry = join(root, `hallmark-${process.pid}-${Date.now()}`);
  try {
    mkdirSync(entry);
    writeFileSync(join(entry, "inblob"), reportData);
    const report = readFileSync(join(entry, "outblob"));
    const aux = existsSync(join(entry, "auxblob")) ? readFileSync(join(entry, "auxblob")) : undefined;
    return { report, vcek: aux && certificateFromTable(aux) };
  } catch (e) {
    throw new HallmarkError("invalid_evidence", `configfs-tsm report failed: ${(e as Error).message}`);
  } finally {
    try {
      rmdirSync(entry);
    } catch {
      // already gone
    }
  }
}

/** The VCEK (or VLEK) from a SEV-SNP certificate table: {GUID, offset u32, length u32}… ended by a zero GUID. */
export function certificateFromTable(table: Buffer): Buffer | undefined {
  for (let at = 0; at + 24 <= table.length; at += 24) {
    const g = table.subarray(at, at + 16);
    if (g.every((b) => b === 0)) return undefined;
    const guid = guidString(g);
    const offset = table.readUInt32LE(at + 16);
    const length = table.readUInt32LE(at + 20);
    if ((guid === VCEK_GUID || guid === VLEK_GUID) && offset + length <= table.length) return table.subarray(offset, offset + length);
  }
  return undefined;
}

function guidString(b: Buffer): string {
  const h = (x: Buffer) => x.toString("hex");
  const le = (x: Buffer) => h(Buffer.from(x).reverse());
  return `${le(b.subarray(0, 4))}-${le(b.subarray(4, 6))}-${le(b.subarray(6, 8))}-${h(b.subarray(8, 10))}-${h(b.subarray(10, 16))}`;
}
