import type { ServerConfig } from "../config/server.js";
import type { KeyUse } from "../hsm/mechanisms.js";
import { jwtSchemeFor, x509SchemeFor } from "../issuer/signature-formats.js";

/**
 * The keys this configuration makes the token generate and sign with, for the start-up
 * mechanism check. An upstream key given by hsmLabel is left out: its type is known only once
 * it is found, and it is used the moment the CA starts, so a missing mechanism shows at once.
 */
export function hsmKeyUses(config: Pick<ServerConfig, "ca" | "jwt" | "delegation">): KeyUse[] {
  return [
    { purpose: "ca.keyType", keyType: config.ca.keyType, scheme: x509SchemeFor(config.ca.keyType) },
    { purpose: "jwt.keyType", keyType: config.jwt.keyType, scheme: jwtSchemeFor(config.jwt.keyType, config.jwt.rsaPadding) },
    // Access tokens sign with the JWT key's RSA padding: one JWS setting for every JWS key.
    { purpose: "delegation.keyType", keyType: config.delegation.keyType, scheme: jwtSchemeFor(config.delegation.keyType, config.jwt.rsaPadding) },
    // The transparency log's checkpoint key (src/transparency/log-key.ts): always Ed25519.
    { purpose: "transparency", keyType: "ed25519", scheme: "ed25519" },
  ];
}
