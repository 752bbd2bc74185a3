import { errorFactory, type ErrorTable } from "../errors.js";

/** Codes of certificate path validation. */
export const PKI_ERRORS = {
} as const satisfies ErrorTable;

export const pkiError = errorFactory(PKI_ERRORS);
