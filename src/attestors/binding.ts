import { createHash } from "node:crypto";

/**
 * The key-binding commitment that hardware evidence carries in its free-form field (TPM quote
 * extraData, SEV-SNP report_data). Exactly:
 *
 *   H( domain || 0x00 || nonce || SHA-256(SPKI) )
 *
 * where `domain` is an attestor's ASCII domain-separation string, `nonce` the session nonce
 * bytes and SPKI the DER SubjectPublicKeyInfo of the key being certified. H is SHA-256 for TPM
 * (extraData holds at most one digest) and SHA-512 for SEV-SNP (report_data is 64 bytes).
 * The domain string stops evidence made for one purpose from being replayed for another.
 */
export function keyBindingCommitment(
  hash: "sha256" | "sha512",
  domain: string,
  nonce: Uint8Array,
  spki: Uint8Array,
): Buffer {
  const keyDigest = createHash("sha256").update(spki).digest();
  return createHash(hash)
    .update(Buffer.from(domain, "ascii"))
    .update(Buffer.from([0]))
    .update(nonce)
    .update(keyDigest)
    .digest();
}

export const BINDING_DOMAINS = {
  tpmQuote: "hallmark-tpm-quote-v1",
  sevSnpReport: "hallmark-sev-snp-report-v1",
} as const;
