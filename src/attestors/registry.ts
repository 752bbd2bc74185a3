import type { Logger } from "pino";
import type { z } from "zod";
import type { ServerConfig } from "../config/server.js";
import { configError } from "../config/errors.js";
import { HallmarkError } from "../errors.js";
import type { TrustDomain } from "../spiffe/id.js";
import type { Store } from "../store/types.js";
import { type NitroAttestorConfig, createNitroAttestor, nitroAttestorConfigSchema } from "./aws-nitro/attestor.js";
import { type SnpAttestorConfig, createSnpAttestor, snpAttestorConfigSchema } from "./amd-sev-snp/attestor.js";
import { JOIN_TOKEN_ATTESTOR, JoinTokenAttestor } from "./join-token/attestor.js";
import { type TpmAttestorConfig, createTpmAttestor, tpmAttestorConfigSchema } from "./tpm/attestor.js";
import type { Attestor } from "./types.js";

export interface AttestorDeps {
  trustDomain: TrustDomain;
  store: Store;
  log: Logger;
}

interface AttestorPlugin {
  type: string;
  schema: z.ZodType;
  create(config: unknown, deps: AttestorDeps): Attestor | Promise<Attestor>;
}

/** Every attestor Hallmark ships, configured under `attestors.<type>` in the server config. */
const PLUGINS: AttestorPlugin[] = [
  { type: "aws_nitro", schema: nitroAttestorConfigSchema, create: (c) => createNitroAttestor(c as NitroAttestorConfig) },
  { type: "amd_sev_snp", schema: snpAttestorConfigSchema, create: (c) => createSnpAttestor(c as SnpAttestorConfig) },
  { type: "tpm", schema: tpmAttestorConfigSchema, create: (c) => createTpmAttestor(c as TpmAttestorConfig) },
];

/** Every attestor type Hallmark knows, enabled here or not: what a node's `attestorType` can be. */
export const ATTESTOR_TYPES: readonly string[] = [JOIN_TOKEN_ATTESTOR, ...PLUGINS.map((p) => p.type)];

/**
 * The enabled attestors: join_token unless disabled, and each one configured under
 * `attestors`. Each configuration is validated by the attestor's own schema, with errors
 * reported under its path.
 */
export async function buildAttestors(config: ServerConfig, deps: AttestorDeps): Promise<Map<string, Attestor>> {
  const attestors = new Map<string, Attestor>();
  if (config.joinToken.enabled) attestors.set(JOIN_TOKEN_ATTESTOR, new JoinTokenAttestor(deps.store.joinTokens));
  for (const [type, raw] of Object.entries(config.attestors)) {
    const plugin = PLUGINS.find((p) => p.type === type);
    if (!plugin) {
      throw new HallmarkError(
        "config_invalid",
        `config: attestors.${type}: unknown attestor (one of: ${ATTESTOR_TYPES.join(", ")})`,
      );
    }
    const parsed = plugin.schema.safeParse(raw ?? {});
    if (!parsed.success) throw configError(`config: attestors.${type}`, parsed.error);
    attestors.set(type, await plugin.create(parsed.data, deps));
    deps.log.info({ attestor: type }, "attestor enabled");
  }
  return attestors;
}
