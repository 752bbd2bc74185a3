import { readFileSync } from "node:fs";
import { HallmarkError } from "../errors.js";

/** DER → PEM, one place for every "CERTIFICATE" block Hallmark writes. */
export function derToPem(der: Uint8Array, label = "CERTIFICATE"): string {
  const b64 = Buffer.from(der).toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

export function pemChain(ders: readonly Uint8Array[]): string {
  return ders.map((d) => derToPem(d)).join("");
}

/** All blocks of one label in a PEM text, as DER. */
export function pemBlocks(text: string, label = "CERTIFICATE"): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+?)-----END ${label}-----`, "g");
  return [...text.matchAll(re)].map((m) => Buffer.from((m[1] ?? "").replace(/\s+/g, ""), "base64"));
}

/** Every certificate in a list of PEM files, for trust-root configuration; a missing file is a config error. */
export function readCertificateFiles(files: readonly string[], where: string): Buffer[] {
  return files.flatMap((f) => {
    try {
      return pemBlocks(readFileSync(f, "utf8"));
    } catch {
      throw new HallmarkError("config_invalid", `${where}: cannot read ${f}`);
    }
  });
}
