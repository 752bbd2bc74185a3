import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { readCertificateFiles } from "../../pki/pem.js";
import { HallmarkError } from "../../errors.js";
import { validateChainCached } from "../../pki/chain-cache.js";
import { parseCertificate, sha256Fingerprint } from "../../pki/certificate.js";
import { hexAllowed } from "../../policy/match.js";
import { SpiffeId } from "../../spiffe/id.js";
import { HASH_ALGS, TPMA_OBJECT, TPM_ST } from "../../tpm/constants.js";
import { makeCredential, tpm2ToolsCredentialFile } from "../../tpm/credential.js";
import { objectName, publicKeyFromTpmtPublic, spkiOf, verifyTpmSignature } from "../../tpm/keys.js";
import { type TpmsAttest, type TpmtPublic, decodeTpm2bPublic, decodeTpmsAttest, decodeTpmtSignature } from "../../tpm/structures.js";
import { BINDING_DOMAINS, keyBindingCommitment } from "../binding.js";
import type { AttestationContext, AttestationStep, Attestor, JsonObject } from "../types.js";
import { tpmAttestorError } from "./errors.js";
import { parseEvidence } from "../evidence.js";

const hex = z.string().regex(/^(0x)?[0-9a-fA-F]+$/, "must be hex");

export const tpmAttestorConfigSchema = z
  .object({
    /** Directory of PEM files: TPM manufacturer roots and intermediates (swtpm's local CA in tests). */
    ekRootsDir: z.string().min(1).optional(),
    /** Or the PEM files themselves. */
    ekRoots: z.array(z.string().min(1)).optional(),
    /** EKs without a certificate, admitted by the SHA-256 of their SubjectPublicKeyInfo. */
    trustedEkHashes: z.array(hex).default([]),
    /** PCR policy: bank → index → one value or a set of values. Every listed PCR must be quoted. */
    pcrPolicy: z.partialRecord(z.enum(["sha1", "sha256", "sha384", "sha512"]), z.record(z.string().regex(/^\d{1,2}$/), z.union([hex, z.array(hex).min(1)]))).default({}),
    /** Require a TPM2_Certify proving the SVID key is TPM-resident (fixedTPM, fixedParent). */
    requireKeyResident: z.boolean().default(false),
    /** Placeholders: {ek_pubhash}. */
    idTemplate: z.string().default("/hallmark/agent/tpm/{ek_pubhash}"),
  })
  .strict();

export type TpmAttestorConfig = z.infer<typeof tpmAttestorConfigSchema>;

const b64 = z.string().min(1).max(16 * 1024);
const evidenceSchema = z
  .object({
    ek_public: b64,
    ek_cert: b64.optional(),
    ak_public: b64,
    quote: b64,
    quote_signature: b64,
    /** bank → index → hex value; or `pcr_values`: the values concatenated in the quote's selection order (tpm2_pcrread -o). */
    pcrs: z.record(z.string(), z.record(z.string(), hex)).optional(),
    pcr_values: b64.optional(),
    /** Optional: the SVID key is a TPM key, certified by the AK (TPM2_Certify). */
    certify: z.object({ public: b64, attest: b64, signature: b64 }).strict().optional(),
  })
  .strict();
const answerSchema = z.object({ secret: z.string().min(1).max(256) }).strict();

const AK_REQUIRED = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin;
/** What every TCG EK template sets (EK Credential Profile 2.0, §2.1.5): a restricted decryption key bound to its TPM. */
const EK_REQUIRED = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt;

export function createTpmAttestor(input: z.input<typeof tpmAttestorConfigSchema>): TpmAttestor {
  const config = tpmAttestorConfigSchema.parse(input);
  const files = [
    ...(config.ekRoots ?? []),
    ...(config.ekRootsDir ? readdirSync(config.ekRootsDir).filter((f) => f.endsWith(".pem")).map((f) => join(config.ekRootsDir!, f)) : []),
  ];
  const certs = readCertificateFiles(files, "attestors.tpm");
  const anchors = certs.filter((c) => parseCertificate(c).subject === parseCertificate(c).issuer);
  return new TpmAttestor(config, anchors, certs);
}

/**
 * The TPM 2.0 node attestor. Round one: the EK (certified by a configured manufacturer root, or
 * allow-listed), a restricted AK, and a quote over PCRs whose extraData commits to the session
 * nonce and the CSR key; answered with a credential-activation challenge made to the EK over the
 * AK's Name. Round two: the decrypted secret proves the AK lives in the TPM that holds the EK.
 */
export class TpmAttestor implements Attestor {
  readonly type = "tpm";

  constructor(
    private readonly config: TpmAttestorConfig,
    private readonly anchors: readonly Buffer[],
    private readonly certificates: readonly Buffer[],
  ) {}

  async attest(evidence: unknown, ctx: AttestationContext): Promise<AttestationStep> {
    const e = parseEvidence(evidenceSchema, evidence, this.type);
    const ek = decodeTpm2bPublic(Buffer.from(e.ek_public, "base64"));
    // Credential activation proves the AK is in this TPM only if the EK can decrypt nothing but
    // the TPM's own protocols: a restricted decryption key, never a signing key, bound to the TPM.
    if ((ek.objectAttributes & EK_REQUIRED) !== EK_REQUIRED || ek.objectAttributes & TPMA_OBJECT.sign) {
      throw tpmAttestorError("tpm_ek_attributes", "the EK must be a restricted decryption key (not a signing key), fixedTPM and fixedParent");
    }
    const ekSpki = spkiOf(ek);
    const ekPubHash = sha256Fingerprint(ekSpki);
    const ekClaims = this.checkEk(ekSpki, ekPubHash, e.ek_cert, ctx.now);

    const ak = decodeTpm2bPublic(Buffer.from(e.ak_public, "base64"));
    if (!(ak.objectAttributes & TPMA_OBJECT.restricted) || !(ak.objectAttributes & TPMA_OBJECT.sign) || ak.objectAttributes & TPMA_OBJECT.decrypt) {
      throw tpmAttestorError("tpm_ak_not_restricted", "the AK must be a restricted signing key");
    }
    if ((ak.objectAttributes & AK_REQUIRED) !== AK_REQUIRED) throw tpmAttestorError("tpm_ak_attributes", "the AK must be fixedTPM, fixedParent and sensitiveDataOrigin");

    const quote = decodeTpmsAttest(Buffer.from(e.quote, "base64"));
    if (quote.type !== TPM_ST.ATTEST_QUOTE || !quote.quote) throw tpmAttestorError("tpm_quote_wrong_type", "the attestation is not a TPM2_Quote");
    const signature = decodeTpmtSignature(Buffer.from(e.quote_signature, "base64"));
    if (!verifyTpmSignature(publicKeyFromTpmtPublic(ak), signature, quote.raw)) {
      throw tpmAttestorError("tpm_quote_signature_invalid", "the quote's signature does not verify with the AK");
    }
    const expected = keyBindingCommitment("sha256", BINDING_DOMAINS.tpmQuote, ctx.nonce, ctx.boundKeySpki);
    if (!quote.extraData.equals(expected)) throw tpmAttestorError("tpm_quote_nonce_mismatch", "the quote's extraData does not commit to this session's nonce and the CSR's key");
    const pcrs = quotedPcrs(quote, e.pcrs, e.pcr_values, signature.hashAlg);
    this.checkPcrPolicy(pcrs);
    const keyResident = e.certify ? checkCertify(e.certify, ak, expected, ctx.boundKeySpki) : false;
    if (this.config.requireKeyResident && !keyResident) throw tpmAttestorError("tpm_key_not_resident", "policy requires the SVID key to be TPM-resident (send a TPM2_Certify)");

    const secret = randomBytes(32);
    const akName = objectName(ak);
    const made = makeCredential(ek, akName, secret);
    const selectors = [
      `ek_pubhash:${ekPubHash}`,
      ...(ekClaims.issuer ? [`ek_cert_issuer:${ekClaims.issuer}`] : []),
      ...(ekClaims.manufacturer ? [`manufacturer:${ekClaims.manufacturer}`] : []),
      ...[...pcrs.entries()].map(([k, v]) => `pcr:${k}:${v}`),
      ...(keyResident ? ["key_resident:true"] : []),
    ];
    const state: JsonObject = {
      secret_sha256: createHash("sha256").update(secret).digest("hex"),
      ek_pubhash: ekPubHash,
      selectors,
      ek_root: ekClaims.root ?? "allow-listed",
    };
    return {
      kind: "challenge",
      challenge: {
        credential_blob: made.credentialBlob.toString("base64"),
        encrypted_secret: made.secret.toString("base64"),
        tpm2_tools_credential: tpm2ToolsCredentialFile(made).toString("base64"),
      },
      state,
    };
  }

  async answer(state: JsonObject, response: unknown, ctx: AttestationContext): Promise<AttestationStep> {
    const { secret } = parseEvidence(answerSchema, response, "tpm answer");
    const got = createHash("sha256").update(Buffer.from(secret, "base64")).digest();
    const want = Buffer.from(String(state.secret_sha256), "hex");
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw tpmAttestorError("tpm_activation_failed", "the activated credential is not the one sent");
    const ekPubHash = String(state.ek_pubhash);
    return {
      kind: "attested",
      result: {
        agentId: SpiffeId.fromParts(ctx.trustDomain, this.config.idTemplate.replaceAll("{ek_pubhash}", ekPubHash)),
        selectors: state.selectors as string[],
        hardwareId: ekPubHash,
        canReattest: true,
        claims: { ek_pubhash: ekPubHash, ek_root: String(state.ek_root) },
      },
    };
  }

  private checkEk(ekSpki: Buffer, ekPubHash: string, certB64: string | undefined, now: Date) {
    if (!certB64) {
      if (this.config.trustedEkHashes.some((h) => hexAllowed(ekPubHash, h))) return {};
      throw tpmAttestorError("tpm_ek_missing_certificate", "the EK has no certificate and its hash is not allow-listed");
    }
    const certDer = Buffer.from(certB64, "base64");
    let chain;
    try {
      // EK certificates carry a critical SAN holding the TPM manufacturer, model and version (TCG EK Credential Profile).
      chain = validateChainCached({ leaf: certDer, intermediates: this.certificates, anchors: this.anchors, at: now, handledCriticalExtensions: ["2.5.29.17"] });
    } catch (e) {
      if (e instanceof HallmarkError && e.code.startsWith("pki_")) throw tpmAttestorError("tpm_ek_untrusted", `the EK certificate is not trusted: ${e.message}`);
      throw e;
    }
    const leaf = chain.path[0]!;
    if (!leaf.publicKey.export({ type: "spki", format: "der" }).equals(ekSpki)) throw tpmAttestorError("tpm_ek_mismatch", "the EK certificate certifies another key");
    return { root: chain.anchorFingerprint, issuer: leaf.issuer.replace(/\n/g, ",").replace(/\s/g, "_"), manufacturer: tpmManufacturer(leaf.extensions.find((x) => x.oid === "2.5.29.17")?.value) };
  }

  private checkPcrPolicy(pcrs: Map<string, string>): void {
    for (const [bank, indexes] of Object.entries(this.config.pcrPolicy)) {
      for (const [index, allowed] of Object.entries(indexes ?? {})) {
        const actual = pcrs.get(`${bank}:${Number(index)}`);
        if (actual === undefined) throw tpmAttestorError("tpm_pcr_missing", `PCR ${bank}:${index} is required by policy but not quoted`);
        if (!hexAllowed(actual, allowed)) throw tpmAttestorError("tpm_pcr_policy_violation", `PCR ${bank}:${index} does not match policy`);
      }
    }
  }
}

/**
 * TPM2_Certify by the AK over the SVID key: the certified Name is the key's, the key is the CSR's,
 * it is fixed to the TPM, and extraData carries the same binding commitment as the quote.
 */
function checkCertify(c: { public: string; attest: string; signature: string }, ak: TpmtPublic, commitment: Buffer, csrSpki: Uint8Array): boolean {
  const key = decodeTpm2bPublic(Buffer.from(c.public, "base64"));
  if (!spkiOf(key).equals(Buffer.from(csrSpki))) throw tpmAttestorError("tpm_certify_key_mismatch", "the certified TPM key is not the key in the CSR");
  if ((key.objectAttributes & (TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin)) !== (TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin)) {
    throw tpmAttestorError("tpm_key_not_resident", "the certified key is not fixedTPM, fixedParent and sensitiveDataOrigin");
  }
  const attest = decodeTpmsAttest(Buffer.from(c.attest, "base64"));
  if (attest.type !== TPM_ST.ATTEST_CERTIFY || !attest.certify) throw tpmAttestorError("tpm_certify_invalid", "the certification is not a TPM2_Certify");
  if (!verifyTpmSignature(publicKeyFromTpmtPublic(ak), decodeTpmtSignature(Buffer.from(c.signature, "base64")), attest.raw)) {
    throw tpmAttestorError("tpm_certify_invalid", "the certification's signature does not verify with the AK");
  }
  if (!attest.certify.name.equals(objectName(key))) throw tpmAttestorError("tpm_certify_invalid", "the certification names another object");
  if (!attest.extraData.equals(commitment)) throw tpmAttestorError("tpm_certify_invalid", "the certification's extraData does not commit to this session");
  return true;
}

/**
 * The reported PCR values, checked against the quote: every quoted PCR must be reported, and
 * the digest of the values in selection order must equal the quote's pcrDigest.
 */
function quotedPcrs(quote: TpmsAttest, map: Record<string, Record<string, string>> | undefined, concatenated: string | undefined, hashAlg: number): Map<string, string> {
  const out = new Map<string, string>();
  const values: Buffer[] = [];
  const flat = concatenated ? Buffer.from(concatenated, "base64") : undefined;
  let offset = 0;
  for (const sel of quote.quote!.pcrSelect) {
    const bank = HASH_ALGS[sel.hashAlg];
    if (!bank) throw tpmAttestorError("tpm_pcr_values_malformed", `PCR bank 0x${sel.hashAlg.toString(16)} is not supported`);
    for (const index of sel.pcrs) {
      let v: Buffer | undefined;
      if (flat) {
        v = flat.subarray(offset, offset + bank.size);
        offset += bank.size;
      } else {
        const h = map?.[bank.name]?.[String(index)];
        v = h === undefined ? undefined : Buffer.from(h.replace(/^0x/, ""), "hex");
      }
      if (!v || v.length !== bank.size) throw tpmAttestorError("tpm_pcr_values_malformed", `no ${bank.size}-byte value for quoted PCR ${bank.name}:${index}`);
      values.push(v);
      out.set(`${bank.name}:${index}`, v.toString("hex"));
    }
  }
  if (flat && offset !== flat.length) throw tpmAttestorError("tpm_pcr_values_malformed", "more PCR values than the quote selects");
  const digest = createHash(HASH_ALGS[hashAlg]!.name).update(Buffer.concat(values)).digest();
  if (!digest.equals(quote.quote!.pcrDigest)) throw tpmAttestorError("tpm_pcr_digest_mismatch", "the reported PCR values do not hash to the quote's pcrDigest");
  return out;
}

/** tcg-at-tpmManufacturer (2.23.133.2.1) from the EK certificate's SAN DirName, e.g. "id:00001014". */
function tpmManufacturer(sanValue: Buffer | undefined): string | undefined {
  if (!sanValue) return undefined;
  const oid = Buffer.from([0x06, 0x05, 0x67, 0x81, 0x05, 0x02, 0x01]);
  const at = sanValue.indexOf(oid);
  if (at < 0) return undefined;
  const tag = sanValue[at + oid.length];
  const len = sanValue[at + oid.length + 1] ?? 0;
  if (tag !== 0x0c && tag !== 0x13 && tag !== 0x16) return undefined;
  return sanValue.subarray(at + oid.length + 2, at + oid.length + 2 + len).toString("utf8").replace(/[^A-Za-z0-9:._-]/g, "_");
}
