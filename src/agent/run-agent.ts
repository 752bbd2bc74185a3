import { isHallmarkError } from "../errors.js";
import type { RunningWorkloadApi, WorkloadApiOptions, WorkloadAttestor } from "../workload-api/ports.js";
import { sleep } from "./backoff.js";
import { EntrySync } from "./entry-sync.js";
import { AgentIdentities } from "./identities.js";
import { NodeIdentity, type NodeIdentityOptions } from "./node-identity.js";
import { SvidCache } from "./svid-cache.js";

/** How the node attests and whom it calls (NodeIdentityOptions), and how the agent polls and caches. */
export interface AgentOptions extends Omit<NodeIdentityOptions, "clock"> {
  /** Seconds between entry and bundle polls (default 5). */
  pollIntervalSeconds?: number | undefined;
  /** Hard cap of cached X.509-SVIDs and of cached JWT-SVIDs (default 1000). */
  maxCachedSvids?: number | undefined;
}

/** The agent without its socket: what tests and the Workload API use. */
export interface AgentCore {
  readonly identities: AgentIdentities;
  readonly node: NodeIdentity;
  readonly entries: EntrySync;
  readonly svids: SvidCache;
  /** Settles with the reason when the agent can no longer serve (evicted, banned, a spent join token): exit non-zero. */
  readonly failed: Promise<Error>;
  close(): Promise<void>;
}

/** How the Workload API is started: src/workload-api/server.ts startWorkloadApi. */
export type StartWorkloadApi = (options: WorkloadApiOptions) => Promise<RunningWorkloadApi>;

export interface RunningAgent extends AgentCore {
  readonly api: RunningWorkloadApi;
}

/**
 * Attests the node (or reuses its stored SVID), syncs its entries, fetches their SVIDs, and keeps
 * all three and the bundle current in the background.
 */
export async function startAgentCore(o: AgentOptions): Promise<AgentCore> {
  const node = await NodeIdentity.start({
    server: o.server,
    serverId: o.serverId,
    trustBundlePem: o.trustBundlePem,
    dataDir: o.dataDir,
    attestor: o.attestor,
    producer: o.producer,
    residentKeySigner: o.residentKeySigner,
    log: o.log,
    retry: o.retry,
  });
  const entries = new EntrySync(node, { intervalSeconds: o.pollIntervalSeconds, retry: o.retry, log: o.log });
  const svids = new SvidCache(node, { maxSvids: o.maxCachedSvids, log: o.log });
  const identities = new AgentIdentities(node, entries, svids, o.log);
  const stop = new AbortController();

  const reconcile = () => svids.reconcile(new Set([...entries.entries.values()].map((e) => e.spiffe_id)));
  const refreshBundle = async () => {
    const b = await node.call((c) => c.bundle());
    identities.setBundle({ bundlePem: b.bundle_pem, spiffeBundle: b.spiffe_bundle as Record<string, unknown> });
  };
  // Foreign bundles (issue 14), only while an entry federates: a node without federation never
  // calls the endpoint (nor fails on a server older than it). A failure keeps the bundles held.
  const refreshFederated = async () => {
    identities.setFederatedBundles(identities.federatedTrustDomains().size === 0 ? {} : await node.call((c) => c.federatedBundles()));
  };
  const warnFailed = (what: string, level: "warn" | "debug") => (e: unknown) =>
    o.log[level]({ code: isHallmarkError(e) ? e.code : "error" }, `agent: ${what} fetch failed; retrying`);
  entries.onChange(() => {
    void reconcile();
    // An entry that starts federating with a domain not held yet: its bundle now, not at the next poll.
    const held = identities.heldFederatedTrustDomains();
    const wanted = identities.federatedTrustDomains();
    if ([...wanted].some((td) => !held.has(td)) || [...held].some((td) => !wanted.has(td))) void refreshFederated().catch(warnFailed("federated bundle", "warn"));
  });
  await refreshBundle().catch(warnFailed("bundle", "warn"));
  await entries.start();
  await refreshFederated().catch(warnFailed("federated bundle", "warn"));
  await reconcile();
  svids.startRenewal();
  // The JWT keys can rotate without the X.509 bundle changing, and foreign bundles change on their
  // own: both are polled with the entries.
  const bundleLoop = (async () => {
    while (!stop.signal.aborted && !node.removed) {
      await sleep((o.pollIntervalSeconds ?? 5) * 1000, stop.signal);
      if (stop.signal.aborted || node.removed) return;
      await refreshBundle().catch(warnFailed("bundle", "debug"));
      await refreshFederated().catch(warnFailed("federated bundle", "debug"));
    }
  })();

  return {
    identities,
    node,
    entries,
    svids,
    failed: node.failed,
    async close() {
      stop.abort();
      await Promise.all([entries.close(), svids.close(), bundleLoop]);
      node.close();
    },
  };
}

/**
 * The whole agent: the core, and the Workload API on `socketPath`. `startWorkloadApi` is passed
 * in so that the agent core does not depend on the gRPC server (and tests can run without it).
 */
export async function runAgent(
  o: AgentOptions & { socketPath: string },
  workloadApi: { start: StartWorkloadApi; attestor: WorkloadAttestor },
): Promise<RunningAgent> {
  const core = await startAgentCore(o);
  let api: RunningWorkloadApi;
  try {
    api = await workloadApi.start({ socketPath: o.socketPath, identities: core.identities, attestor: workloadApi.attestor });
  } catch (e) {
    await core.close();
    throw e;
  }
  o.log.info({ socket: api.socketPath, spiffeId: core.node.spiffeId }, "agent: serving the Workload API");
  return {
    ...core,
    api,
    async close() {
      await api.close();
      await core.close();
    },
  };
}
