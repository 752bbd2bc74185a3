import { z } from "zod";
import { readCertificateFiles } from "../../pki/pem.js";
import { shippedFile } from "../../project-files.js";
import { durationSeconds } from "../../config/duration.js";
import { HallmarkError } from "../../errors.js";
import { parseFingerprint, sha256Fingerprint } from "../../pki/certificate.js";
import { hexAllowed } from "../../policy/match.js";
import { SpiffeId } from "../../spiffe/id.js";
import type { AttestationContext, AttestationStep, Attestor } from "../types.js";
import { type NitroDocument, parseNitroDocument } from "./document.js";
import { nitroError } from "./errors.js";
import { verifyNitroDocument } from "./verify.js";
import { parseEvidence } from "../evidence.js";

/** AWS Nitro Enclaves Root-G1, shipped in fixtures/ and pinned by its published fingerprint. */
export const AWS_NITRO_ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";
const DEFAULT_ROOT_FILE = shippedFile("fixtures/aws-nitro-root-g1.pem");

const hexValue = z.string().regex(/^(0x)?[0-9a-fA-F]+$/, "must be hex");
const POLICY_PCRS = ["0", "1", "2", "3", "4", "8"] as const;

export const nitroAttestorConfigSchema = z
  .object({
    /** PEM files of pinned roots; default: the AWS Nitro Enclaves Root-G1 shipped with Hallmark. */
    rootFiles: z.array(z.string().min(1)).min(1).optional(),
    /** SHA-256 fingerprints the roots must have (hex, colons allowed). */
    rootFingerprints: z.array(z.string().min(32)).optional(),
    maxDocumentAge: durationSeconds.default(300),
    allowDebug: z.boolean().default(false),
    /** PCR policy: index → one value or a set of values (hex). Only 0, 1, 2, 3, 4 and 8 are policy PCRs. */
    pcrs: z.partialRecord(z.enum(POLICY_PCRS), z.union([hexValue, z.array(hexValue).min(1)])).default({}),
    /** Placeholders: {pcr0}, {pcr0_prefix} (first 16 hex digits), {module_id}. */
    idTemplate: z.string().default("/hallmark/agent/aws_nitro/{pcr0_prefix}"),
  })
  .strict();

export type NitroAttestorConfig = z.infer<typeof nitroAttestorConfigSchema>;

const evidenceSchema = z.object({ document: z.string().min(1).max(64 * 1024) }).strict();

export function createNitroAttestor(config: NitroAttestorConfig): NitroAttestor {
  const anchors = readCertificateFiles(config.rootFiles ?? [DEFAULT_ROOT_FILE], "attestors.aws_nitro.rootFiles");
  const pins = (config.rootFingerprints ?? (config.rootFiles ? [] : [AWS_NITRO_ROOT_G1_SHA256])).map(parseFingerprint);
  for (const pin of pins) {
    if (!anchors.some((a) => sha256Fingerprint(a) === pin)) {
      throw new HallmarkError("config_invalid", `attestors.aws_nitro: no root has the pinned fingerprint ${pin}`);
    }
  }
  return new NitroAttestor(config, pins.length ? anchors.filter((a) => pins.includes(sha256Fingerprint(a))) : anchors);
}

const SKEW_MS = 60_000;

/**
 * The AWS Nitro Enclaves attestor: the document's chain to the pinned root at the document's own
 * time, its COSE signature, its freshness, its binding (nonce = session nonce, public_key = the
 * key being certified), then PCR policy. Enclaves are ephemeral, so no hardware identity pins the
 * node: the ID names the enclave image (PCR0) and nodes may re-attest.
 */
export class NitroAttestor implements Attestor {
  readonly type = "aws_nitro";

  constructor(
    private readonly config: NitroAttestorConfig,
    private readonly anchors: readonly Buffer[],
  ) {}

  async attest(evidence: unknown, ctx: AttestationContext): Promise<AttestationStep> {
    const { document } = parseEvidence(evidenceSchema, evidence, this.type);
    const doc = parseNitroDocument(Buffer.from(document, "base64"));
    const { rootFingerprint } = verifyNitroDocument(doc, { anchors: this.anchors });
    this.checkFreshness(doc, ctx.now);
    if (!doc.nonce || !Buffer.from(doc.nonce).equals(Buffer.from(ctx.nonce))) {
      throw nitroError("nitro_nonce_mismatch", "the document's nonce is not this session's nonce");
    }
    if (!doc.publicKey || !Buffer.from(doc.publicKey).equals(Buffer.from(ctx.boundKeySpki))) {
      throw nitroError("nitro_public_key_mismatch", "the document's public_key is not the CSR's key");
    }
    const debug = checkNitroPolicy(doc, this.config);
    const pcr0 = doc.pcrs.get(0)!.toString("hex");
    const path = this.config.idTemplate
      .replaceAll("{pcr0}", pcr0)
      .replaceAll("{pcr0_prefix}", pcr0.slice(0, 16))
      .replaceAll("{module_id}", doc.moduleId.replace(/[^A-Za-z0-9._-]/g, "_"));
    return {
      kind: "attested",
      result: {
        agentId: SpiffeId.fromParts(ctx.trustDomain, path),
        selectors: nitroSelectors(doc, debug),
        canReattest: true,
        claims: { module_id: doc.moduleId, pcr0, root_sha256: rootFingerprint, timestamp: doc.timestamp.toISOString(), debug },
      },
    };
  }

  private checkFreshness(doc: NitroDocument, now: Date): void {
    const age = now.getTime() - doc.timestamp.getTime();
    if (age > this.config.maxDocumentAge * 1000 || age < -SKEW_MS) {
      throw nitroError("nitro_document_stale", `the document is ${Math.round(age / 1000)} s old (at most ${this.config.maxDocumentAge} s)`);
    }
  }
}

/** Debug enclaves report PCR0-2 as all zeros. Returns whether this one is a debug enclave. */
export function checkNitroPolicy(doc: NitroDocument, config: Pick<NitroAttestorConfig, "allowDebug" | "pcrs">): boolean {
  for (const i of [0, 1, 2]) {
    if (!doc.pcrs.has(i)) throw nitroError("nitro_pcr_missing", `PCR${i} is missing from the document`);
  }
  const debug = [0, 1, 2].every((i) => doc.pcrs.get(i)!.every((b) => b === 0));
  if (debug && !config.allowDebug) throw nitroError("nitro_debug_enclave", "a debug enclave (PCR0-2 all zero) is refused by policy");
  for (const [index, allowed] of Object.entries(config.pcrs)) {
    const actual = doc.pcrs.get(Number(index));
    if (!actual) throw nitroError("nitro_pcr_missing", `PCR${index} is required by policy but missing`);
    if (allowed === undefined || !hexAllowed(actual.toString("hex"), allowed)) {
      throw nitroError("nitro_pcr_policy_violation", `PCR${index} does not match the policy`);
    }
  }
  return debug;
}

export function nitroSelectors(doc: NitroDocument, debug: boolean): string[] {
  return [
    ...[...doc.pcrs.entries()].sort(([a], [b]) => a - b).map(([i, v]) => `pcr${i}:${v.toString("hex")}`),
    `module_id:${doc.moduleId}`,
    `debug:${debug}`,
  ];
}
