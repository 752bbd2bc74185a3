import type { Logger } from "pino";
import type { AuditLog } from "../audit/log.js";
import type { ServerConfig } from "../config/server.js";
import type { KeyStore } from "../hsm/signer.js";
import type { Clock } from "../service/clock.js";
import type { TrustDomain } from "../spiffe/id.js";
import type { Store } from "../store/types.js";
import { checkTreeOnStart, signNextCheckpoint } from "../transparency/checkpointer.js";
import { integrateAll, startIntegrator } from "../transparency/integrator.js";
import { RecentAuditRecords } from "../transparency/recent-records.js";
import { openLogKey } from "../transparency/log-key.js";
import { TransparencyReader } from "../transparency/log-reader.js";
import { httpExchange } from "../client/log-client.js";
import { WitnessCollector, type WitnessPost } from "../transparency/witness-collector.js";
import { startIntervalTask } from "./interval-task.js";

/** A witness that does not answer add-checkpoint in this long is skipped until the next checkpoint. */
const WITNESS_TIMEOUT_MS = 5_000;

const postToWitness: WitnessPost = async (url, body) => {
  const a = await httpExchange(new URL(url), { method: "POST", body, timeoutMs: WITNESS_TIMEOUT_MS });
  return { status: a.status, body: a.body.toString("utf8") };
};

/** How often the integrator polls for records appended by other replicas or processes. */
const INTEGRATION_POLL_SECONDS = 1;

/** The checkpoint's origin line: transparency.origin, else `<trust domain>/hallmark-log`. */
export function logOrigin(config: Pick<ServerConfig, "transparency">, trustDomain: TrustDomain): string {
  return config.transparency.origin ?? `${trustDomain.name}/hallmark-log`;
}

export interface RunningTransparencyLog {
  reader: TransparencyReader;
  stop(): Promise<void>;
}

/**
 * The transparency log inside the server: finds (or makes) the log key in the HSM, refuses a
 * store that does not extend the last signed checkpoint, catches up with the records a crash
 * left unintegrated, signs a checkpoint, then integrates within transparency.integrationDelay of
 * an append (and every second) and
 * signs at transparency.checkpointInterval.
 */
export async function startTransparencyLog(o: {
  config: ServerConfig;
  trustDomain: TrustDomain;
  store: Store;
  keyStore: KeyStore;
  audit: AuditLog;
  clock: Clock;
  log: Logger;
}): Promise<RunningTransparencyLog> {
  const { store, log } = o;
  const origin = logOrigin(o.config, o.trustDomain);
  // Under the replicas' common lock: replicas starting together on an empty database make one log key, not one each.
  const { state, key } = await store.coordination.exclusively("transparency-log-key", async () => {
    const state = await store.transparency.state();
    return { state, key: await openLogKey(o.keyStore, origin, state.checkpoint !== undefined) };
  });
  const signing = { tree: store.transparency, audit: store.audit, key, origin, clock: o.clock };
  await checkTreeOnStart(signing, o.config.audit.tailCheckRecords);
  const integration = { audit: store.audit, tree: store.transparency, batch: o.config.transparency.integrationBatch };
  const caughtUp = await integrateAll(integration);
  const first = await signNextCheckpoint(signing);
  log.info({ origin, keyLabel: key.label, caughtUp, treeSize: first?.treeSize ?? state.checkpoint?.treeSize }, "transparency log ready");

  const recent = new RecentAuditRecords();
  const integrator = startIntegrator({ ...integration, recent }, { pollSeconds: INTEGRATION_POLL_SECONDS, delayMs: o.config.transparency.integrationDelay }, log);
  o.audit.onAppend((committed) => {
    recent.add(committed);
    integrator.wake();
  });
  // The collector proves from the reader, the reader serves the collector's cosignatures.
  const witnesses: WitnessCollector = new WitnessCollector(o.config.transparency.witnesses, postToWitness, (first, second) => reader.consistency(first, second), log);
  const reader: TransparencyReader = new TransparencyReader(store.transparency, store.audit, key, (cp) => witnesses.cosigned(cp));
  // Every tick: sign when the tree grew, then have the witnesses cosign the latest checkpoint
  // (signed here or by another replica), in the background.
  const collect = async () => {
    const { checkpoint } = await store.transparency.state();
    if (checkpoint && witnesses.enabled) void witnesses.submit(checkpoint);
  };
  await collect();
  const checkpoints = startIntervalTask(
    "sign a transparency log checkpoint",
    o.config.transparency.checkpointInterval,
    async () => {
      await signNextCheckpoint(signing);
      await collect();
    },
    log,
  );
  return {
    reader,
    async stop() {
      await checkpoints.stop();
      await integrator.stop();
    },
  };
}
