import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import type { AuditLog } from "../audit/log.js";
import { pemBlocks } from "../pki/pem.js";
import type { ServerConfig } from "../config/server.js";
import { HallmarkError } from "../errors.js";
import type { KeyStore, Signer } from "../hsm/signer.js";
import { CertificateAuthority, type UpstreamCa } from "../issuer/authority.js";
import { parseCsr } from "../issuer/csr.js";
import { loadFileSigner } from "../issuer/file-signer.js";
import type { TrustDomain } from "../spiffe/id.js";
import type { Store } from "../store/types.js";
import { AUDIT_EVENTS } from "./audit-events.js";
import type { Clock } from "./clock.js";
import type { AutomaticCaKeyChange, CsrParser } from "./ports.js";

/**
 * Builds the certificate authority from the server configuration. Key steps the CA takes on its
 * own (its first keys, scheduled rotation) are audited here with the server as the actor, as
 * AdminService audits the ones an administrator asks for.
 */
export async function openCertificateAuthority(o: {
  config: ServerConfig;
  trustDomain: TrustDomain;
  keyStore: KeyStore;
  store: Store;
  audit: AuditLog;
  clock: Clock;
  log: Logger;
}): Promise<{ ca: CertificateAuthority; parseCsr: CsrParser }> {
  const { config } = o;
  const ca = await CertificateAuthority.open({
    trustDomain: o.trustDomain,
    keyStore: o.keyStore,
    caKeys: o.store.caKeys,
    svids: o.store.svids,
    clock: o.clock,
    log: o.log,
    x509: { keyType: config.ca.keyType, ttlSeconds: config.ca.ttl, upstream: await loadUpstream(config, o.keyStore) },
    jwt: { keyType: config.jwt.keyType, rsaPadding: config.jwt.rsaPadding, maxTtlSeconds: config.svid.maxTtl },
    wit: { maxTtlSeconds: config.svid.maxTtl },
    token: { keyType: config.delegation.keyType, latestExpiry: (keyId) => o.store.accessTokens.latestExpiry(keyId) },
    refreshHintSeconds: config.bundle.refreshHint,
    rotation: config.ca.rotation && {
      prepareAt: config.ca.rotation.prepareAt,
      activateAt: config.ca.rotation.activateAt,
      checkIntervalSeconds: config.ca.rotation.checkInterval,
    },
    coordination: o.store.coordination,
    onAutomaticKeyChange: async (change: AutomaticCaKeyChange) => {
      await o.audit.append({ time: o.clock(), event: AUDIT_EVENTS.caKeyChange, outcome: "success", actor: "server", details: { ...change } });
    },
  });
  return { ca, parseCsr: (pem) => parseCsr(pem) };
}

async function loadUpstream(config: ServerConfig, keyStore: KeyStore): Promise<UpstreamCa | undefined> {
  const up = config.ca.upstream;
  if (!up) return undefined;
  let text: string;
  try {
    text = readFileSync(up.certificateChainFile, "utf8");
  } catch {
    throw new HallmarkError("config_invalid", `ca.upstream.certificateChainFile: cannot read ${up.certificateChainFile}`);
  }
  const chain = pemBlocks(text);
  if (chain.length === 0) throw new HallmarkError("config_invalid", "ca.upstream.certificateChainFile: no PEM certificates");
  let signer: Signer | undefined;
  if (up.keyFile) signer = loadFileSigner(up.keyFile);
  else if (up.hsmLabel) signer = await keyStore.find(up.hsmLabel, { recorded: true });
  if (!signer) throw new HallmarkError("hsm_key_not_found", `ca.upstream.hsmLabel: no key labelled '${up.hsmLabel}' in the token`);
  return { chain, signer };
}
