import { errorFactory, type ErrorTable } from "../../errors.js";

/** Codes of the TPM node attestor. */
export const TPM_ATTESTOR_ERRORS = {
} as const satisfies ErrorTable;

export const tpmAttestorError = errorFactory(TPM_ATTESTOR_ERRORS);
