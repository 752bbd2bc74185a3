import type { ChangeTopic } from "../../store/types.js";

/**
 * What the processes of a `server.workers` group say to each other over cluster's IPC channel.
 * Every message carries `hallmark`, so cluster's own internal messages are never mistaken for ours.
 */
export type WorkerToPrimary =
  /** A write of `topic` committed in this worker: the others must hear it. */
  | { hallmark: "announce"; topic: ChangeTopic }
  /** Wants the group-wide lock `name`; `id` names this request in the answer and the release. */
  | { hallmark: "lock"; name: string; id: number }
  | { hallmark: "unlock"; id: number }
  /** Serving: the bound URLs (port 0 resolved), for the primary's one "listening" line. */
  | { hallmark: "ready"; url: string; webBundleUrl?: string | undefined };

export type PrimaryToWorker = { hallmark: "change"; topic: ChangeTopic } | { hallmark: "granted"; id: number };

const TOPICS: ReadonlySet<string> = new Set<ChangeTopic>(["entries", "caKeys"]);

function isObject(m: unknown): m is Record<string, unknown> {
  return typeof m === "object" && m !== null;
}

export function workerMessage(m: unknown): WorkerToPrimary | undefined {
  if (!isObject(m)) return undefined;
  switch (m.hallmark) {
    case "announce":
      return typeof m.topic === "string" && TOPICS.has(m.topic) ? (m as WorkerToPrimary) : undefined;
    case "lock":
      return typeof m.name === "string" && Number.isSafeInteger(m.id) ? (m as WorkerToPrimary) : undefined;
    case "unlock":
      return Number.isSafeInteger(m.id) ? (m as WorkerToPrimary) : undefined;
    case "ready":
      return typeof m.url === "string" ? (m as WorkerToPrimary) : undefined;
    default:
      return undefined;
  }
}

export function primaryMessage(m: unknown): PrimaryToWorker | undefined {
  if (!isObject(m)) return undefined;
  if (m.hallmark === "change" && typeof m.topic === "string" && TOPICS.has(m.topic)) return m as PrimaryToWorker;
  if (m.hallmark === "granted" && Number.isSafeInteger(m.id)) return m as PrimaryToWorker;
  return undefined;
}

/**
 * What the primary hands each worker in its environment (cluster.fork's env): internal, never
 * configuration a user sets. The DPoP nonce secret is shared so that a nonce one worker hands out
 * is accepted by the others; it is removed from the environment as soon as it is read.
 */
export const WORKER_ENV = {
  slot: "HALLMARK_INTERNAL_WORKER_SLOT",
  count: "HALLMARK_INTERNAL_WORKER_COUNT",
  dpopNonceSecret: "HALLMARK_INTERNAL_DPOP_NONCE_SECRET",
  /** The listening address once port 0 is resolved: a restarted worker binds the group's port. */
  listen: "HALLMARK_INTERNAL_WORKER_LISTEN",
} as const;
