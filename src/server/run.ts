import type { Logger } from "pino";
import { buildAdminApp, buildPublicApp } from "../api/app.js";
import type { OAuthServices } from "../api/oauth-routes.js";
import { closeConnectionsAtCertificateExpiry } from "../api/peer.js";
import { AuditLog } from "../audit/log.js";
import { WorkerAuditVerifier } from "../audit/worker-verifier.js";
import { ATTESTOR_TYPES, buildAttestors } from "../attestors/registry.js";
import { MIN_ISSUANCE_BURST, type ServerConfig, adminSocketPath } from "../config/server.js";
import { HallmarkError } from "../errors.js";
import { DelegationService } from "../oauth/delegation-service.js";
import { FederationService } from "../federation/service.js";
import { openPkcs11KeyStore } from "../hsm/pkcs11-keystore.js";
import type { KeyStore } from "../hsm/signer.js";
import { findSoftHsmModule } from "../hsm/softhsm.js";
import { SOFTHSM_AUTO_INIT_LOG, softHsmAutoInitInUse } from "./dev-notice.js";
import { AccessTokenService } from "../oauth/access-tokens.js";
import { ClientAuthenticator } from "../oauth/client-auth.js";
import { RotatingDpopNonces, DpopVerifier } from "../oauth/dpop.js";
import { OAUTH_PATHS, endpointUrl, ownAudiences } from "../oauth/metadata.js";
import { SubjectTokenVerifier } from "../oauth/subject-tokens.js";
import { TokenExchangeService } from "../oauth/token-exchange.js";
import { AdminService } from "../service/admin.js";
import { AttestationService } from "../service/attestation.js";
import { checkAuditTail } from "../service/audit-tail-check.js";
import { openCertificateAuthority } from "../service/ca-adapter.js";
import { type Clock, systemClock } from "../service/clock.js";
import { Metrics } from "../service/metrics.js";
import { NodeIssuanceService } from "../service/node-issuance.js";
import { purgeExpired } from "../service/purge.js";
import { BY_ADDRESS, BY_CLIENT, BY_NODE, RateLimit, type RateLimitSubject } from "../service/rate-limit.js";
import { TrustDomain } from "../spiffe/id.js";
import type { ProcessCoordination } from "../store/change-feed.js";
import { openStore } from "../store/open.js";
import type { Store } from "../store/types.js";
import { hsmKeyUses } from "./hsm-key-uses.js";
import { listenOnPrivateSocket } from "./admin-socket.js";
import { claimDataDirectory } from "./data-dir.js";
import { startIntervalTask } from "./interval-task.js";
import { boundHttpsUrl, splitHostPort } from "./listen.js";
import { openDevSoftHsmToken } from "./dev-softhsm.js";
import { readSecretFile } from "./secrets.js";
import { startWebBundleEndpoint } from "./web-bundle-endpoint.js";
import { startTransparencyLog } from "./transparency-log.js";
import { ServerTlsIdentity, serverCertificateNames } from "./tls-identity.js";

export interface RunningServer {
  /** https://host:port actually bound (port 0 resolves to the real port). */
  url: string;
  adminSocket: string;
  /** The https_web federation bundle endpoint, when configured. */
  webBundleUrl?: string;
  /** The token service behind /oauth2 (token exchange issues through it; tests and benches too). */
  oauth: OAuthServices;
  close(): Promise<void>;
}

/**
 * A worker of a `server.workers` group (src/server/workers): the primary holds the data
 * directory's claim, relays the store's notices and locks, and hands every worker one DPoP nonce
 * secret. Internal: never a configuration field.
 */
export interface WorkerRole {
  /** 0 to count - 1; slot 0 serves the admin socket (one process binds it, see the README). */
  slot: number;
  count: number;
  coordination: ProcessCoordination;
  dpopNonceSecret: Uint8Array;
}

/**
 * Opens everything in dependency order (HSM, store, CA, attestors, APIs) and closes it in the
 * reverse order. Used by `hallmark server`, the tests and the benchmarks alike.
 */
export async function startServer(config: ServerConfig, log: Logger, clock: Clock = systemClock, worker?: WorkerRole): Promise<RunningServer> {
  const closers: Array<() => Promise<void>> = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) {
      await close().catch((e: unknown) => log.error({ err: e }, "error while closing"));
    }
  };
  try {
    // A worker's primary holds the claim (a second claim would refuse the worker).
    if (!worker) {
      const dataDir = claimDataDirectory(config);
      closers.push(async () => dataDir.release());
    }
    const trustDomain = TrustDomain.parse(config.trustDomain);
    // The store opens before the HSM: whether a missing SoftHSM token may be created depends on
    // whether the database already records CA keys (see openDevSoftHsmToken).
    // SQLite in the data directory, or the shared PostgreSQL database (store.driver).
    const store: Store = await openStore(config, { log, coordination: worker?.coordination });
    closers.push(() => store.close());
    const keyStore = await openHsm(config, log, store);
    closers.push(() => keyStore.close());
    const metrics = new Metrics();
    const audit = new AuditLog(store.audit, { ...config.audit.groupCommit, onCommit: (n) => metrics.auditCommitted(n) });
    // Closers run in reverse: the appends still pending commit after everything that appends has
    // stopped (the last rate-limit summary included) and before the store closes.
    closers.push(() => audit.close());
    await checkAuditTail({ audit: store.audit, records: config.audit.tailCheckRecords, metrics, log });
    const auditVerifier = new WorkerAuditVerifier({ dataDir: config.dataDir, store: config.store });
    const { ca, parseCsr } = await openCertificateAuthority({ config, trustDomain, keyStore, store, audit, clock, log });
    closers.push(() => ca.close());
    // Before anything is issued: a store that does not extend the last signed checkpoint refuses to start.
    const tlog = await startTransparencyLog({ config, trustDomain, store, keyStore, audit, clock, log });
    closers.push(() => tlog.stop());
    const attestors = await buildAttestors(config, { trustDomain, store, log });
    const serverId = trustDomain.id("/hallmark/server");

    const attestation = new AttestationService({
      trustDomain,
      store,
      audit,
      issuer: ca,
      parseCsr,
      attestors,
      clock,
      sessionTtlSeconds: config.attestation.sessionTtl,
      nodeTtlSeconds: config.svid.nodeTtl,
      renewalOverlapSeconds: config.svid.nodeRenewalOverlap,
      metrics,
    });
    // The one place the OIDC issuer is decided: the discovery document serves it and every
    // JWT-SVID carries it as `iss`, so relying parties that match the two (AWS, GCP, Vault) accept.
    let boundUrl = `https://${config.listen}`;
    const issuerUrl = () => config.jwt.issuer ?? boundUrl;
    const nodes = new NodeIssuanceService({
      trustDomain,
      serverId,
      store,
      audit,
      issuer: ca,
      parseCsr,
      clock,
      ttl: { node: config.svid.nodeTtl, x509: config.svid.x509Ttl, jwt: config.svid.jwtTtl, wit: config.svid.witTtl, max: config.svid.maxTtl },
      renewalOverlapSeconds: config.svid.nodeRenewalOverlap,
      metrics,
      jwtIssuer: issuerUrl,
    });
    const delegations = new DelegationService({
      trustDomain,
      store,
      audit,
      clock,
      maxTtlCeilingSeconds: config.svid.maxTtl,
      attestorTypes: ATTESTOR_TYPES,
    });
    // The token service's issuer: delegation.issuer, else the OIDC issuer (same rules, same default).
    const oauthIssuer = () => config.delegation.issuer ?? issuerUrl();
    const clients = new ClientAuthenticator({ trustDomain, store, jwtJwks: () => ca.jwtJwks(), audiences: () => ownAudiences(oauthIssuer()) });
    const tokens = new AccessTokenService({
      trustDomain,
      store,
      signer: ca,
      delegations,
      clients,
      audit,
      clock,
      issuer: oauthIssuer,
      introspectionDpop: new DpopVerifier({ replay: store.dpopProofs, iatWindowSeconds: config.delegation.dpop.iatWindow }),
    });
    const oauth: OAuthServices = { tokens, signer: ca, issuer: oauthIssuer };
    const federation = new FederationService({ trustDomain, store, audit, clock, log, fetchTimeoutMs: config.federation.fetchTimeout * 1000 });
    const admin = new AdminService({ trustDomain, store, audit, auditVerifier, metrics, ca, clock, maxJoinTokenTtlSeconds: config.joinToken.maxTtl, backupDir: config.dataDir, federation });

    const [host, port] = splitHostPort(config.listen);
    const tls = new ServerTlsIdentity({
      serverId,
      issuer: ca,
      audit,
      bundlePem: () => ca.bundlePem(),
      crossSigned: () => ca.crossSignedCertificates(),
      names: serverCertificateNames(host, config.tls),
      clock,
      log,
    });
    const material = await tls.issue();
    let ready = false;
    const limits = config.limits;
    // Buckets are per process and connections are spread over the workers: each worker gets its
    // share, so the group as a whole admits about the configured rate from one address or node.
    const share = worker?.count ?? 1;
    const perProcess = (rate: { perSecond: number; burst: number }, maxKeys: number, subject: RateLimitSubject, minBurst = 1) =>
      new RateLimit({ perSecond: rate.perSecond / share, burst: Math.max(minBurst, Math.ceil(rate.burst / share)), maxKeys, audit, metrics, clock, subject });
    const attestRateLimit = perProcess(limits.attestRate, limits.attestRate.trackedAddresses, BY_ADDRESS);
    // An issuance bucket must hold the largest batch, or a batch could never pass.
    const issuanceRateLimit = perProcess(limits.issuanceRate, limits.issuanceRate.trackedNodes, BY_NODE, MIN_ISSUANCE_BURST);
    const clientRateLimit = perProcess(limits.clientRate, limits.clientRate.trackedClients, BY_CLIENT);
    // Registered before the app's closer, so they stop after it: the last refusals are summarised.
    const summaries = startIntervalTask(
      "rate-limit audit summary",
      limits.rateLimitAuditInterval,
      () => Promise.all([attestRateLimit.flush(), issuanceRateLimit.flush(), clientRateLimit.flush()]),
      log,
      { finalRun: true },
    );
    closers.push(() => summaries.stop());
    const purge = startIntervalTask("purge expired sessions, join tokens and DPoP proofs", limits.purgeInterval, () => purgeExpired(store, clock(), limits.entryChangeRetention), log);
    closers.push(() => purge.stop());
    const publicApp = await buildPublicApp(
      { log, bodyLimit: config.attestation.maxEvidenceBytes, tls: material, limits, metrics },
      { attestation, nodes, ca, metrics, ready: () => ready && store.healthy(), issuerUrl, attestRateLimit, issuanceRateLimit, clientRateLimit, oauth, federation, transparency: tlog.reader },
    );
    closers.push(() => publicApp.close());
    // Closers run in reverse: long polls of the entries answer at once, so closing does not wait for them.
    closers.push(async () => nodes.stopWaiting());
    const adminApp = await buildAdminApp({ log }, { admin, ca, delegations, federation });
    closers.push(() => adminApp.close());
    // Closers run in reverse: a verification still walking is stopped first (its caller gets
    // `unavailable`), so closing the admin listener does not wait for the walk to finish.
    closers.push(() => auditVerifier.close());

    await publicApp.listen({ host, port });
    const url = boundHttpsUrl(publicApp.server, host, port);
    boundUrl = url;
    oauth.exchange = tokenExchange({ config, trustDomain, store, ca, clients, delegations, tokens, audit, clock, log, issuer: oauthIssuer, jwtIssuer: issuerUrl, nonceSecret: worker?.dpopNonceSecret });
    tls.attach(publicApp.server as unknown as import("node:tls").Server);
    closeConnectionsAtCertificateExpiry(publicApp.server as unknown as import("node:tls").Server, clock);
    closers.push(async () => tls.stop());
    let webBundleUrl: string | undefined;
    if (config.federation.bundleEndpoint) {
      const web = await startWebBundleEndpoint(config.federation.bundleEndpoint, { ca, issuerUrl, log, clock, limits });
      closers.push(() => web.close());
      webBundleUrl = `${web.url}/.well-known/spiffe-bundle`;
    }
    // The group's admin socket is served by one worker (slot 0); the others' admin writes never
    // happen, and what slot 0 writes reaches them through the store's coordination.
    const adminSocket = adminSocketPath(config);
    if (!worker || worker.slot === 0) closers.push(await listenOnPrivateSocket(adminApp, adminSocket));
    ca.onBundleChange(() => void tls.refresh("bundle_changed"));
    const stopRotation = ca.startScheduledRotation();
    closers.push(async () => stopRotation());
    // Foreign bundles (issue 14): each relationship is fetched when its refresh hint says so.
    const federationRefresh = startIntervalTask("refresh federated bundles", config.federation.refreshCheckInterval, () => federation.refreshDue(), log);
    closers.push(() => federationRefresh.stop());
    ready = true;
    log.info({ url, adminSocket, webBundleUrl, trustDomain: trustDomain.name, dataDir: config.dataDir }, "hallmark server ready");
    return { url, adminSocket, ...(webBundleUrl ? { webBundleUrl } : {}), oauth, close: closeAll };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

/**
 * The token exchange, built once the listener is bound: the subject-token verifier recognises
 * Hallmark's own tokens by the issuer, which may default to the bound URL.
 */
function tokenExchange(o: {
  config: ServerConfig;
  trustDomain: TrustDomain;
  store: Store;
  ca: Awaited<ReturnType<typeof openCertificateAuthority>>["ca"];
  clients: ClientAuthenticator;
  delegations: DelegationService;
  tokens: AccessTokenService;
  audit: AuditLog;
  clock: Clock;
  log: Logger;
  issuer: () => string;
  jwtIssuer: () => string;
  /** One secret for every worker of a group; a single process makes its own. */
  nonceSecret?: Uint8Array | undefined;
}): TokenExchangeService {
  const d = o.config.delegation;
  const issuer = o.issuer();
  const subjects = new SubjectTokenVerifier({
    issuers: d.subjectIssuers,
    maxActDepth: d.maxActDepth,
    log: o.log,
    own: {
      issuer,
      trustDomain: o.trustDomain.name,
      tokenEndpoint: endpointUrl(issuer, OAUTH_PATHS.token),
      jwtSvidIssuer: o.jwtIssuer() === issuer ? undefined : o.jwtIssuer(),
      accessTokenJwks: () => o.ca.accessTokenJwks() as never,
      jwtSvidJwks: () => o.ca.jwtJwks() as never,
    },
  });
  // An issuer that is down at start is not a reason not to start: said now, retried per token.
  subjects.ready(o.clock()).catch((e: unknown) => o.log.warn({ err: e }, "a subject issuer's keys could not be loaded at start"));
  // A nonce lives one to two iat windows: about as long as a proof made with it is acceptable.
  const nonces = d.dpop.nonce ? new RotatingDpopNonces({ periodSeconds: d.dpop.iatWindow, secret: o.nonceSecret }) : undefined;
  return new TokenExchangeService({
    trustDomain: o.trustDomain,
    clients: o.clients,
    dpop: new DpopVerifier({ replay: o.store.dpopProofs, iatWindowSeconds: d.dpop.iatWindow, nonces }),
    nonces,
    subjects,
    delegations: o.delegations,
    tokens: o.tokens,
    audit: o.audit,
    clock: o.clock,
    issuer: o.issuer,
    maxActDepth: d.maxActDepth,
    accessTokenTtlSeconds: d.accessTokenTtl,
    dpopRequired: d.dpop.required,
  });
}

async function openHsm(config: ServerConfig, log: Logger, store: Store): Promise<KeyStore> {
  const hsm = config.hsm;
  let modulePath = hsm.modulePath;
  let pin: string | undefined = hsm.pinFile ? readSecretFile(hsm.pinFile, "hsm.pinFile") : process.env[hsm.pinEnv] || undefined;
  if (softHsmAutoInitInUse(config)) {
    const token = await openDevSoftHsmToken({ dataDir: config.dataDir, tokenLabel: hsm.tokenLabel, pin, caKeys: store.caKeys });
    ({ modulePath, pin } = token);
    log.warn({ tokenDir: token.dir }, SOFTHSM_AUTO_INIT_LOG);
  }
  modulePath ??= findSoftHsmModule();
  if (!pin) {
    throw new HallmarkError("config_invalid", `no HSM PIN: set hsm.pinFile or the ${hsm.pinEnv} environment variable`);
  }
  const sessionCopies = hsm.sessionCopies === "auto" ? undefined : hsm.sessionCopies === "on";
  return openPkcs11KeyStore({ modulePath, tokenLabel: hsm.tokenLabel, pin, sessions: hsm.sessions, signing: hsm.signing, sessionCopies, requiredKeyUses: hsmKeyUses(config) });
}
