import cluster, { type Worker } from "node:cluster";
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { ServerConfig } from "../../config/server.js";
import { adminSocketPath } from "../../config/server.js";
import { claimDataDirectory } from "../data-dir.js";
import { CoordinationHub, type WorkerLink } from "./coordination-hub.js";
import { WORKER_ENV, workerMessage } from "./messages.js";

/** A worker that dies before it serves this many times in a row is not started again: the group stops. */
const MAX_FAILED_STARTS = 5;
/** Restart delays double from the first to the last (a worker that keeps dying must not spin). */
const FIRST_RESTART_DELAY_MS = 250;
const MAX_RESTART_DELAY_MS = 5_000;

export interface ServingGroup {
  url: string;
  adminSocket: string;
  webBundleUrl?: string | undefined;
  workerPids(): number[];
  /** Resolves with the exit code once every worker has exited (after `stop`, or when the group gave up). */
  done: Promise<number>;
  /** SIGTERM to every worker; resolves with the exit code once they have all exited. */
  stop(): Promise<number>;
}

interface Slot {
  index: number;
  worker?: Worker | undefined;
  /** Consecutive deaths before serving: the restart backoff and the give-up count. */
  failedStarts: number;
  served: boolean;
}

/**
 * The primary of `server.workers: N` (node:cluster): claims the data directory, forks N workers
 * running the server on one shared listening port, relays their store notices and locks
 * (CoordinationHub), restarts a worker that dies, and stops them all on request. Worker 0 starts
 * alone first (it migrates the database, makes the development token and the first keys); the
 * others start once it serves. A worker that fails before serving at the group's start fails the
 * start: its own stderr line says why, and the primary exits with its code, no restart loop.
 */
export async function startWorkersPrimary(config: ServerConfig, count: number, log: Logger): Promise<ServingGroup> {
  const dataDir = claimDataDirectory(config);
  const hub = new CoordinationHub(log);
  const secret = randomBytes(32).toString("base64url");
  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({ index, failedStarts: 0, served: false }));
  let stopping = false;
  let resolvedListen: string | undefined;
  let groupListen: string | undefined;
  let first: { url: string; webBundleUrl?: string | undefined } | undefined;
  let finish!: (code: number) => void;
  const done = new Promise<number>((resolve) => (finish = resolve));
  let exitCode = 0;
  const readyWaiters = new Map<Slot, { ready: () => void; failed: (code: number) => void }>();

  const live = () => slots.filter((s) => s.worker);
  const endIfAllGone = () => {
    if (stopping && live().length === 0) {
      dataDir.release();
      finish(exitCode);
    }
  };

  const fork = (slot: Slot) => {
    const env: Record<string, string> = {
      [WORKER_ENV.slot]: String(slot.index),
      [WORKER_ENV.count]: String(count),
      [WORKER_ENV.dpopNonceSecret]: secret,
    };
    // Cluster shares one listening handle per address as the workers asked for it (port 0 too) for
    // as long as one of them holds it: only when none is left does a new worker bind the port
    // that port 0 resolved to, and every later worker asks for that address.
    if (resolvedListen && live().length === 0) groupListen = resolvedListen;
    if (groupListen) env[WORKER_ENV.listen] = groupListen;
    const worker = cluster.fork(env);
    slot.worker = worker;
    slot.served = false;
    const link: WorkerLink = { id: worker.id, send: (m) => void worker.send(m) };
    hub.join(link);
    worker.on("error", (e) => log.debug({ err: e, worker: slot.index }, "worker IPC error"));
    worker.on("message", (raw: unknown) => {
      if (hub.handle(link, raw)) return;
      const m = workerMessage(raw);
      if (m?.hallmark !== "ready") return;
      slot.served = true;
      slot.failedStarts = 0;
      if (!first) {
        first = { url: m.url, webBundleUrl: m.webBundleUrl };
        const u = new URL(m.url);
        resolvedListen = `${u.hostname}:${u.port}`;
      }
      readyWaiters.get(slot)?.ready();
    });
    worker.once("exit", (code, signal) => {
      hub.leave(link);
      slot.worker = undefined;
      const waiter = readyWaiters.get(slot);
      if (stopping) {
        if (code !== 0 && code !== null) exitCode = 1;
        endIfAllGone();
        return;
      }
      if (!slot.served) slot.failedStarts++;
      if (waiter) {
        // Failed at the group's start: the worker's own line said why.
        waiter.failed(typeof code === "number" && code !== 0 ? code : 1);
        return;
      }
      log.warn({ worker: slot.index, pid: worker.process.pid, code, signal }, "a worker exited unexpectedly: restarting it");
      if (slot.failedStarts >= MAX_FAILED_STARTS) {
        log.error({ worker: slot.index, failedStarts: slot.failedStarts }, "a worker keeps failing at start: stopping the server");
        exitCode = 1;
        void stop();
        return;
      }
      const delay = Math.min(MAX_RESTART_DELAY_MS, FIRST_RESTART_DELAY_MS * 2 ** slot.failedStarts);
      setTimeout(() => {
        if (!stopping) fork(slot);
      }, delay).unref();
    });
  };

  const started = (slot: Slot) =>
    new Promise<void>((ready, failed) => {
      readyWaiters.set(slot, { ready, failed: (code) => failed(code) });
      fork(slot);
    }).finally(() => readyWaiters.delete(slot));

  const stop = async () => {
    stopping = true;
    for (const s of live()) s.worker!.process.kill("SIGTERM");
    endIfAllGone();
    return done;
  };

  try {
    await started(slots[0]!);
    await Promise.all(slots.slice(1).map(started));
  } catch (code) {
    exitCode = typeof code === "number" ? code : 1;
    await stop();
    throw new WorkersStartFailed(exitCode);
  }
  return {
    url: first!.url,
    adminSocket: adminSocketPath(config),
    webBundleUrl: first!.webBundleUrl,
    workerPids: () => live().map((s) => s.worker!.process.pid!),
    done,
    stop,
  };
}

/** A worker failed at the group's start and said why on stderr: the primary only exits with its code. */
export class WorkersStartFailed extends Error {
  constructor(readonly exitCode: number) {
    super(`a worker failed to start (exit ${exitCode})`);
  }
}
