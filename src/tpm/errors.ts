import { errorFactory, type ErrorTable } from "../errors.js";

/** Codes of the TPM 2.0 wire layer. */
export const TPM_ERRORS = {
  tpm_truncated: { status: 400, title: "A TPM structure is truncated" },
  tpm_trailing_bytes: { status: 400, title: "A TPM structure has trailing bytes" },
  tpm_size_mismatch: { status: 400, title: "A TPM size field does not match its contents" },
  tpm_unknown_tag: { status: 400, title: "A TPM structure has an unknown tag or type" },
  tpm_unsupported_algorithm: { status: 400, title: "A TPM algorithm is not supported" },
  tpm_command_failed: { status: 500, title: "A TPM command failed" },
  tpm_quote_bad_magic: { status: 400, title: "The attestation structure does not start with TPM_GENERATED_VALUE" },
} as const satisfies ErrorTable;

export const tpmError = errorFactory(TPM_ERRORS);
