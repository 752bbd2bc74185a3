import { errorFactory, type ErrorTable } from "../../errors.js";

/** Codes of the AMD SEV-SNP attestor. */
export const SNP_ERRORS = {
} as const satisfies ErrorTable;

export const snpError = errorFactory(SNP_ERRORS);
