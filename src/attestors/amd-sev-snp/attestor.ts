import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { pemBlocks, readCertificateFiles } from "../../pki/pem.js";
import { HallmarkError } from "../../errors.js";
import { parseCertificate, parseFingerprint, sha256Fingerprint } from "../../pki/certificate.js";
import { hexAllowed } from "../../policy/match.js";
import { shippedFile } from "../../project-files.js";
import { SpiffeId } from "../../spiffe/id.js";
import { BINDING_DOMAINS, keyBindingCommitment } from "../binding.js";
import type { AttestationContext, AttestationStep, Attestor } from "../types.js";
import { snpError } from "./errors.js";
import { POLICY_BITS, type Product, type SnpReport, type Tcb, parseSnpReport } from "./report.js";
import { type VerifiedSnpReport, verifySnpReport } from "./verify.js";
import { parseEvidence } from "../evidence.js";

/** The AMD roots (ARK) shipped in fixtures/amd and their published SHA-256 fingerprints. */
export const AMD_ARK_SHA256: Record<Product, string> = {
  Milan: "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
  Genoa: "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
  Turin: "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
};
/**
 * AMD's public intermediates with their ARK, as the KDS serves them: `ask-ark-*` from
 * /vcek/v1/{product}/cert_chain (VCEKs chain through the ASK), `asvk-ark-*` from
 * /vlek/v1/{product}/cert_chain (VLEKs chain through the ASVK). The Genoa and Turin ASVK files are
 * google/go-sev-guest's verify/trust/ask_ark_{genoa,turin}_vlek.pem; each ASVK's RSA-PSS signature
 * verifies under the pinned ARK of its product line, which is what makes it genuine (the ARK
 * pins below are the only trust; an intermediate that does not chain to them is useless).
 */
export const SHIPPED_CHAINS = (["Milan", "Genoa", "Turin"] as const).flatMap((p) => [`ask-ark-${p}.pem`, `asvk-ark-${p}.pem`]).map((f) => shippedFile(`fixtures/amd/${f}`));

const hex = z.string().regex(/^(0x)?[0-9a-fA-F]+$/, "must be hex");
const hexList = z.array(hex).min(1);

export const snpAttestorConfigSchema = z
  .object({
    /** PEM files holding ASK/ASVK and ARK certificates; default: AMD's, shipped with Hallmark. */
    chainFiles: z.array(z.string().min(1)).min(1).optional(),
    /** Pinned ARK fingerprints (hex, colons allowed); default: AMD's Milan, Genoa and Turin ARKs. */
    arkFingerprints: z.array(z.string().min(32)).optional(),
    /** Directory of cached VCEKs named <chip_id hex>-<reported_tcb hex>.der (or .pem); never fetched at verification time. */
    vcekCacheDir: z.string().min(1).optional(),
    /** For version-2 reports, which carry no CPUID, when the VCEK does not name the product either. */
    product: z.enum(["Milan", "Genoa", "Turin"]).optional(),
    measurements: hexList.optional(),
    hostData: hexList.optional(),
    minTcb: z
      .object({ bootloader: z.number().int().min(0), tee: z.number().int().min(0), snp: z.number().int().min(0), microcode: z.number().int().min(0), fmc: z.number().int().min(0) })
      .partial()
      .strict()
      .default({}),
    allowDebug: z.boolean().default(false),
    allowMigrateMa: z.boolean().default(false),
    vmpls: z.array(z.number().int().min(0).max(3)).min(1).default([0]),
    minGuestSvn: z.number().int().min(0).default(0),
    idKeyDigests: hexList.optional(),
    authorKeyDigests: hexList.optional(),
    /** Placeholders: {chip_id_prefix} (first 16 hex digits), {measurement_prefix}. */
    idTemplate: z.string().default("/hallmark/agent/amd_sev_snp/{chip_id_prefix}"),
  })
  .strict();

export type SnpAttestorConfig = z.infer<typeof snpAttestorConfigSchema>;

const evidenceSchema = z
  .object({
    report: z.string().min(1).max(4096),
    /** The VCEK or VLEK, DER as base64, or PEM. Optional when a VCEK cache is configured. */
    vcek: z.string().min(1).max(16 * 1024).optional(),
    /** ASK/ASVK (and ARK) as PEM; optional: the configured chains are used otherwise. */
    cert_chain: z.string().min(1).max(32 * 1024).optional(),
  })
  .strict();

export function createSnpAttestor(config: SnpAttestorConfig): SnpAttestor {
  const certs = readCertificateFiles(config.chainFiles ?? SHIPPED_CHAINS, "attestors.amd_sev_snp.chainFiles");
  const pins = (config.arkFingerprints ?? (config.chainFiles ? [] : Object.values(AMD_ARK_SHA256))).map(parseFingerprint);
  const anchors = pins.length ? certs.filter((c) => pins.includes(sha256Fingerprint(c))) : certs.filter((c) => isSelfSigned(c));
  for (const pin of pins) {
    if (!anchors.some((a) => sha256Fingerprint(a) === pin)) throw new HallmarkError("config_invalid", `attestors.amd_sev_snp: no ARK has the pinned fingerprint ${pin}`);
  }
  return new SnpAttestor(config, anchors, certs);
}

function isSelfSigned(der: Buffer): boolean {
  try {
    const c = parseCertificate(der);
    return c.subject === c.issuer;
  } catch {
    return false;
  }
}

/**
 * The AMD SEV-SNP attestor. Binding: report_data = SHA-512("hallmark-sev-snp-report-v1" || 0x00 ||
 * nonce || SHA-256(SPKI)) (src/attestors/binding.ts). The node's identity is its chip: a node
 * that comes back under the same ID on another chip is refused by the host.
 */
export class SnpAttestor implements Attestor {
  readonly type = "amd_sev_snp";

  constructor(
    private readonly config: SnpAttestorConfig,
    private readonly anchors: readonly Buffer[],
    private readonly certificates: readonly Buffer[],
  ) {}

  async attest(evidence: unknown, ctx: AttestationContext): Promise<AttestationStep> {
    const e = parseEvidence(evidenceSchema, evidence, this.type);
    const report = parseSnpReport(Buffer.from(e.report, "base64"));
    const signingCert = this.signingCertificate(report, e.vcek);
    const chain = e.cert_chain ? pemBlocks(e.cert_chain) : this.certificates;
    const verified = verifySnpReport(report, { signingCert, chain, anchors: this.anchors, at: ctx.now, product: this.config.product });
    const expected = keyBindingCommitment("sha512", BINDING_DOMAINS.sevSnpReport, ctx.nonce, ctx.boundKeySpki);
    if (!report.reportData.equals(expected)) throw snpError("snp_report_data_mismatch", "report_data does not commit to this session's nonce and the CSR's key");
    checkSnpPolicy(report, verified.tcb, this.config);
    const chipId = report.chipId.toString("hex");
    const measurement = report.measurement.toString("hex");
    const path = this.config.idTemplate.replaceAll("{chip_id_prefix}", chipId.slice(0, 16)).replaceAll("{measurement_prefix}", measurement.slice(0, 16));
    return {
      kind: "attested",
      result: {
        agentId: SpiffeId.fromParts(ctx.trustDomain, path),
        selectors: snpSelectors(report, verified),
        hardwareId: report.maskChipKey ? undefined : chipId,
        canReattest: true,
        claims: { product: verified.product, signer: verified.signer, measurement, ark_sha256: verified.rootFingerprint, report_version: report.version },
      },
    };
  }

  private signingCertificate(report: SnpReport, given: string | undefined): Buffer {
    if (given) return given.includes("BEGIN CERTIFICATE") ? (pemBlocks(given)[0] ?? Buffer.alloc(0)) : Buffer.from(given, "base64");
    const dir = this.config.vcekCacheDir;
    if (dir) {
      const base = `${report.chipId.toString("hex")}-${report.reportedTcbRaw.toString(16).padStart(16, "0")}`;
      for (const ext of [".der", ".pem"]) {
        const file = join(dir, base + ext);
        if (existsSync(file)) {
          const bytes = readFileSync(file);
          return ext === ".pem" ? (pemBlocks(bytes.toString())[0] ?? Buffer.alloc(0)) : bytes;
        }
      }
    }
    throw snpError("snp_vcek_missing", "send the VCEK/VLEK with the evidence, or configure a VCEK cache that holds it");
  }
}

export function checkSnpPolicy(report: SnpReport, tcb: Tcb, config: SnpAttestorConfig): void {
  if (config.measurements && !hexAllowed(report.measurement.toString("hex"), config.measurements)) {
    throw snpError("snp_measurement_not_allowed", "the launch measurement is not in the allow-list");
  }
  if (config.hostData && !hexAllowed(report.hostData.toString("hex"), config.hostData)) throw snpError("snp_host_data_not_allowed", "host_data is not in the allow-list");
  for (const [k, min] of Object.entries(config.minTcb)) {
    const actual = tcb[k as keyof Omit<Tcb, "raw">];
    if (min !== undefined && (actual === undefined || actual < min)) throw snpError("snp_tcb_too_old", `TCB ${k} is ${String(actual)}, below the minimum ${min}`);
  }
  if (report.policy & POLICY_BITS.debug && !config.allowDebug) throw snpError("snp_debug_not_allowed", "the guest policy allows debugging");
  if (report.policy & POLICY_BITS.migrateMa && !config.allowMigrateMa) throw snpError("snp_migrate_ma_not_allowed", "the guest policy allows a migration agent");
  if (!config.vmpls.includes(report.vmpl)) throw snpError("snp_vmpl_not_allowed", `VMPL ${report.vmpl} is not allowed`);
  if (report.guestSvn < config.minGuestSvn) throw snpError("snp_guest_svn_too_old", `guest SVN ${report.guestSvn} is below ${config.minGuestSvn}`);
  if (config.idKeyDigests && !hexAllowed(report.idKeyDigest.toString("hex"), config.idKeyDigests)) throw snpError("snp_id_key_not_allowed", "the ID key digest is not allowed");
  if (config.authorKeyDigests && !hexAllowed(report.authorKeyDigest.toString("hex"), config.authorKeyDigests)) {
    throw snpError("snp_author_key_not_allowed", "the author key digest is not allowed");
  }
}

export function snpSelectors(report: SnpReport, v: VerifiedSnpReport): string[] {
  return [
    `measurement:${report.measurement.toString("hex")}`,
    `host_data:${report.hostData.toString("hex")}`,
    ...(report.maskChipKey ? [] : [`chip_id:${report.chipId.toString("hex")}`]),
    `product:${v.product}`,
    `signer:${v.signer}`,
    `policy:debug:${(report.policy & POLICY_BITS.debug) !== 0n}`,
    `policy:migrate_ma:${(report.policy & POLICY_BITS.migrateMa) !== 0n}`,
    `vmpl:${report.vmpl}`,
    `guest_svn:${report.guestSvn}`,
    ...(v.tcb.fmc !== undefined ? [`tcb:fmc:${v.tcb.fmc}`] : []),
    `tcb:bootloader:${v.tcb.bootloader}`,
    `tcb:tee:${v.tcb.tee}`,
    `tcb:snp:${v.tcb.snp}`,
    `tcb:microcode:${v.tcb.microcode}`,
  ];
}
