import { errorFactory, type ErrorTable } from "../errors.js";

/** Codes of certificate path validation (evidence trust roots: TPM EK, AWS Nitro, AMD). */
export const PKI_ERRORS = {
  pki_cert_malformed: { status: 400, title: "A certificate cannot be parsed" },
  pki_chain_untrusted: { status: 403, title: "The certificate chain does not lead to a pinned root" },
  pki_cert_not_yet_valid: { status: 403, title: "A certificate in the chain is not yet valid" },
  pki_cert_expired: { status: 403, title: "A certificate in the chain has expired" },
  pki_signature_invalid: { status: 403, title: "A certificate signature does not verify" },
  pki_issuer_not_ca: { status: 403, title: "A certificate was issued by a non-CA certificate" },
  pki_path_length_exceeded: { status: 403, title: "The chain exceeds a path length constraint" },
  pki_key_usage_missing: { status: 403, title: "An issuer lacks the keyCertSign key usage" },
  pki_unhandled_critical_extension: { status: 403, title: "A certificate has a critical extension that is not understood" },
  pki_chain_too_long: { status: 403, title: "The certificate chain is too long" },
} as const satisfies ErrorTable;

export const pkiError = errorFactory(PKI_ERRORS);
