import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HallmarkError } from "../../errors.js";
import type { EvidenceProducer } from "../types.js";

/**
 * The enclave side. Node cannot call the NSM device, so the document comes from the enclave's
 * own NSM tooling: `evidenceCmd` runs with the session nonce and the DER SPKI of the key to
 * certify, as environment variables (HALLMARK_NONCE_HEX, HALLMARK_PUBLIC_KEY_DER_B64) and as
 * files (HALLMARK_NONCE_FILE, HALLMARK_PUBLIC_KEY_FILE), and prints the COSE_Sign1 document on
 * stdout, raw or base64. `document` is a document made beforehand (its nonce must match).
 */
export function createNitroEvidenceProducer(o: { document?: Buffer | undefined; evidenceCmd?: string | undefined }): EvidenceProducer {
  if (!o.document && !o.evidenceCmd) throw new Error("aws_nitro needs --evidence-cmd CMD or --evidence-file FILE");
  return {
    type: "aws_nitro",
    async evidence({ nonce, spki }) {
      const bytes = o.evidenceCmd ? await runEvidenceCommand(o.evidenceCmd, { nonce, spki }) : o.document!;
      return { document: asBase64Document(bytes) };
    },
  };
}

/** Runs an evidence command with the binding inputs; shared by the Nitro and SEV-SNP producers. */
export async function runEvidenceCommand(cmd: string, binding: { nonce: Uint8Array; spki: Uint8Array; reportDataHex?: string }): Promise<Buffer> {
  const dir = mkdtempSync(join(tmpdir(), "hallmark-evidence-"));
  try {
    const nonceFile = join(dir, "nonce.bin");
    const keyFile = join(dir, "public_key.der");
    writeFileSync(nonceFile, binding.nonce);
    writeFileSync(keyFile, binding.spki);
    const env = {
      ...process.env,
      HALLMARK_NONCE_HEX: Buffer.from(binding.nonce).toString("hex"),
      HALLMARK_PUBLIC_KEY_DER_B64: Buffer.from(binding.spki).toString("base64"),
      HALLMARK_NONCE_FILE: nonceFile,
      HALLMARK_PUBLIC_KEY_FILE: keyFile,
      ...(binding.reportDataHex ? { HALLMARK_REPORT_DATA_HEX: binding.reportDataHex } : {}),
    };
    return await new Promise<Buffer>((resolve, reject) => {
      execFile("/bin/sh", ["-c", cmd], { env, encoding: "buffer", maxBuffer: 1024 * 1024, timeout: 60_000 }, (err, stdout, stderr) => {
        if (err) reject(new HallmarkError("invalid_evidence", `the evidence command failed: ${stderr.toString().trim().split("\n")[0] ?? err.message}`));
        else resolve(stdout);
      });
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Accepts raw CBOR or base64 text (a COSE_Sign1 starts with 0x84 or tag 0xd2). */
function asBase64Document(bytes: Buffer): string {
  const first = bytes[0];
  if (first === 0x84 || first === 0xd2) return bytes.toString("base64");
  return bytes.toString("ascii").trim();
}
