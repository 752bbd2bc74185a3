import { errorFactory, type ErrorTable } from "../../errors.js";

/** Codes of the AWS Nitro Enclaves attestor. */
export const NITRO_ERRORS = {
} as const satisfies ErrorTable;

export const nitroError = errorFactory(NITRO_ERRORS);
