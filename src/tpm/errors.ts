import { errorFactory, type ErrorTable } from "../errors.js";

/** Codes of TPM 2.0 wire layer, transports and commands. */
export const TPM_ERRORS = {
} as const satisfies ErrorTable;

export const tpmError = errorFactory(TPM_ERRORS);
