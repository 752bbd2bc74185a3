import { CORE_ERRORS } from "./core-errors.js";
import type { ErrorSpec } from "./errors.js";
import { PKI_ERRORS } from "./pki/errors.js";
import { TPM_ERRORS } from "./tpm/errors.js";
import { TPM_ATTESTOR_ERRORS } from "./attestors/tpm/errors.js";
import { NITRO_ERRORS } from "./attestors/aws-nitro/errors.js";
import { SNP_ERRORS } from "./attestors/amd-sev-snp/errors.js";
import { AGENT_ERRORS } from "./agent/errors.js";
import { WORKLOAD_API_ERRORS } from "./workload-api/errors.js";
import { OAUTH_ERRORS } from "./oauth/errors.js";
import { TRANSPARENCY_ERRORS } from "./transparency/errors.js";
import { FEDERATION_ERRORS } from "./federation/errors.js";

/** Every code Hallmark can answer with, in one table (the API and the docs read it). */
export const ERROR_CODES: Readonly<Record<string, ErrorSpec>> = {
  ...CORE_ERRORS,
  ...PKI_ERRORS,
  ...TPM_ERRORS,
  ...TPM_ATTESTOR_ERRORS,
  ...NITRO_ERRORS,
  ...SNP_ERRORS,
  ...AGENT_ERRORS,
  ...WORKLOAD_API_ERRORS,
  ...OAUTH_ERRORS,
  ...TRANSPARENCY_ERRORS,
  ...FEDERATION_ERRORS,
};

export function errorSpec(code: string): ErrorSpec {
  return ERROR_CODES[code] ?? CORE_ERRORS.internal;
}
