import type { ServerConfig } from "../config/server.js";

/**
 * The development defaults, said once. The server logs the short form and `hallmark server`
 * prints the long form on stderr at start, so nobody runs the quick start's key storage in
 * production without having been told (as node-oidc-provider does for its development adapter).
 */

/** True when the server creates and opens its own SoftHSM2 token under the data directory. */
export function softHsmAutoInitInUse(config: Pick<ServerConfig, "hsm">): boolean {
  return !config.hsm.modulePath && config.hsm.softhsmAutoInit;
}

export const SOFTHSM_AUTO_INIT_LOG =
  "DEVELOPMENT DEFAULT: CA keys are in a SoftHSM2 token under the data directory, with its PIN beside it; configure hsm.modulePath and hsm.pinFile for a real HSM";

export function softHsmAutoInitNotice(config: Pick<ServerConfig, "hsm" | "dataDir">): string {
  const rule = "=".repeat(78);
  const settings: Array<[string, string]> = [
    ["hsm.modulePath (or HALLMARK_HSM_MODULE)", "the PKCS#11 module of your HSM"],
    ["hsm.tokenLabel (or HALLMARK_HSM_TOKEN_LABEL)", "the token that holds the keys"],
    [`hsm.pinFile, or the PIN in ${config.hsm.pinEnv}`, "the user PIN, never in the config file"],
    ["hsm.softhsmAutoInit: false", "never create a token at start"],
  ];
  const width = Math.max(...settings.map(([k]) => k.length));
  return [
    rule,
    "DEVELOPMENT DEFAULT: the CA and JWT signing keys are in a SoftHSM2 token that Hallmark",
    `created itself under ${config.dataDir}/softhsm, with its PINs in files beside it`,
    `(unless ${config.hsm.pinEnv} gives the user PIN). Whoever can read the data directory can`,
    "sign with these keys. For production, use a real HSM and keep its PIN elsewhere:",
    ...settings.map(([k, v]) => `  ${k.padEnd(width)}   ${v}`),
    rule,
  ].join("\n");
}
