import type { Logger } from "pino";
import type { ServerConfig } from "../../config/server.js";
import { type RunningServer, startServer } from "../run.js";
import { WORKER_ENV } from "./messages.js";
import { processChannel, workerCoordination } from "./worker-coordination.js";

/**
 * One worker of a `server.workers` group (a cluster worker forked by runPrimary with the same
 * command line): the server as a single process runs it, on the group's shared port, with the
 * primary's coordination and DPoP nonce secret. Resolves once it stopped: on SIGTERM/SIGINT,
 * or when the primary is gone (its IPC channel closed).
 */
export async function runWorker(config: ServerConfig, log: Logger): Promise<number> {
  const slot = Number(process.env[WORKER_ENV.slot]);
  const count = Number(process.env[WORKER_ENV.count]);
  const secret = Buffer.from(process.env[WORKER_ENV.dpopNonceSecret] ?? "", "base64url");
  // Read once, then out of the environment: nothing this process starts inherits it.
  delete process.env[WORKER_ENV.dpopNonceSecret];
  const listen = process.env[WORKER_ENV.listen];
  if (listen) config.listen = listen;
  const workerLog = log.child({ worker: slot, pid: process.pid });
  const channel = processChannel();
  const stopped = new Promise<string>((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
    channel.onDisconnect(() => resolve("primary gone"));
  });
  let server: RunningServer;
  try {
    server = await startServer(config, workerLog, undefined, { slot, count, coordination: workerCoordination(channel), dpopNonceSecret: secret });
  } catch (e) {
    // The IPC channel would keep this process alive after the CLI printed why it failed.
    if (process.connected) process.disconnect();
    throw e;
  }
  channel.send({ hallmark: "ready", url: server.url, webBundleUrl: server.webBundleUrl });
  const why = await stopped;
  workerLog.info({ why }, "worker shutting down");
  await server.close();
  // The IPC channel would keep the event loop (and the process) alive.
  if (process.connected) process.disconnect();
  return 0;
}
