import { errorFactory, type ErrorTable } from "../errors.js";

/** Codes of the TPM 2.0 wire layer. */
export const TPM_ERRORS = {
  tpm_truncated: { status: 400, title: "A TPM structure is truncated" },
  tpm_trailing_bytes: { status: 400, title: "A TPM structure has trailing bytes" },
  tpm_size_mismatch: { status: 400, title: "A TPM size field does not match its contents" },
  tpm_unknown_tag: { status: 400, title: "A TPM structure has an unknown tag or type" },
  tpm_unsupported_algorithm: { status: 400, title: "A TPM algorithm is not supported" },
  // Strict TPMT_PUBLIC: values a TPM would never have produced are refused before any use, so a
  // flipped bit is caught at parse time rather than, much later, by credential activation.
  tpm_public_reserved_bits: { status: 400, title: "A TPM public area sets reserved objectAttributes bits" },
  tpm_public_unknown_hash: { status: 400, title: "A TPM public area names a hash algorithm that is not supported" },
  tpm_public_unknown_scheme: { status: 400, title: "A TPM public area names a scheme that is not supported for its key type" },
  tpm_public_unknown_symmetric: { status: 400, title: "A TPM public area names a symmetric algorithm, key size or mode that is not supported" },
  tpm_public_unknown_curve: { status: 400, title: "A TPM public area names an ECC curve that is not supported" },
  tpm_public_bad_rsa_parameters: { status: 400, title: "A TPM public area has an RSA key size or exponent that is not supported" },
  tpm_command_failed: { status: 500, title: "A TPM command failed" },
  tpm_quote_bad_magic: { status: 400, title: "The attestation structure does not start with TPM_GENERATED_VALUE" },
} as const satisfies ErrorTable;

export const tpmError = errorFactory(TPM_ERRORS);
