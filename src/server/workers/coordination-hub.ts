import type { Logger } from "pino";
import { type PrimaryToWorker, workerMessage } from "./messages.js";

/** The primary's view of one worker: how to reach it. */
export interface WorkerLink {
  readonly id: number;
  send(message: PrimaryToWorker): void;
}

interface LockRequest {
  worker: WorkerLink;
  id: number;
}

/**
 * The primary's half of the workers' store coordination: relays each worker's committed-write
 * notices to the others, and keeps the group-wide named locks (one holder per name, the others
 * waiting in arrival order). A worker that is gone releases what it held and leaves the queues,
 * so a worker killed inside a rotation step never blocks the others.
 */
export class CoordinationHub {
  private readonly workers = new Set<WorkerLink>();
  private readonly locks = new Map<string, { holder: LockRequest; waiting: LockRequest[] }>();

  constructor(private readonly log: Logger) {}

  join(worker: WorkerLink): void {
    this.workers.add(worker);
  }

  /** Handles one message of `worker`; true when it was a coordination message. */
  handle(worker: WorkerLink, raw: unknown): boolean {
    const m = workerMessage(raw);
    if (!m) return false;
    if (m.hallmark === "announce") {
      for (const w of this.workers) if (w !== worker) this.deliver(w, { hallmark: "change", topic: m.topic });
    } else if (m.hallmark === "lock") {
      this.acquire(m.name, { worker, id: m.id });
    } else if (m.hallmark === "unlock") {
      for (const [name, lock] of this.locks) {
        if (lock.holder.worker === worker && lock.holder.id === m.id) this.passOn(name);
      }
    } else {
      return false;
    }
    return true;
  }

  /** The worker has exited: its locks are released, its requests forgotten. */
  leave(worker: WorkerLink): void {
    this.workers.delete(worker);
    for (const [name, lock] of [...this.locks]) {
      lock.waiting = lock.waiting.filter((r) => r.worker !== worker);
      if (lock.holder.worker === worker) {
        this.log.warn({ lock: name, worker: worker.id }, "a worker exited holding a store lock: released");
        this.passOn(name);
      }
    }
  }

  private acquire(name: string, request: LockRequest): void {
    const lock = this.locks.get(name);
    if (lock) {
      lock.waiting.push(request);
      return;
    }
    this.locks.set(name, { holder: request, waiting: [] });
    this.deliver(request.worker, { hallmark: "granted", id: request.id });
  }

  private passOn(name: string): void {
    const lock = this.locks.get(name);
    if (!lock) return;
    const next = lock.waiting.shift();
    if (!next) {
      this.locks.delete(name);
      return;
    }
    lock.holder = next;
    this.deliver(next.worker, { hallmark: "granted", id: next.id });
  }

  private deliver(worker: WorkerLink, m: PrimaryToWorker): void {
    try {
      worker.send(m);
    } catch (e) {
      // The worker is exiting: `leave` follows and releases whatever it would have held.
      this.log.debug({ err: e, worker: worker.id }, "a message to a worker was not delivered");
    }
  }
}
