import type { FastifyInstance } from "fastify";
import type { Metrics } from "../service/metrics.js";

/**
 * Starts requests in the order they were read, at most `perTurn` in one turn of the event loop.
 *
 * Why (issue 10, goal 4): Node runs a request's synchronous work (authentication, validation,
 * signing, up to its audit append) inside the read callback of its socket, and libuv handles
 * every socket one epoll_wait reported before it polls again. With 1,024 busy connections one
 * such batch is about a second of work. Requests arriving meanwhile are read in the next batch in
 * the order of epoll's ready list, which is not their arrival order (a socket already listed keeps
 * its old place), so some waited one batch and others two: p99 twice p50, and 9 to 14 answers per
 * connection in the same 8 s, with a plain Node HTTPS server as with Hallmark. Holding each request
 * here and starting a few per turn keeps every batch of reads short, so requests are read about
 * when they arrive and served first come, first served: p99 1.2 times p50, 10 to 11 answers per
 * connection, at the same CPU per request.
 *
 * An idle server starts a request at once (the turn's allowance is unused); only a request that
 * finds others waiting, or the turn's allowance spent, waits for the next turn. Nothing is
 * refused here: how many requests may be open at all is the connection caps' business.
 */
export class ArrivalOrder {
  private readonly waiting: Array<() => void> = [];
  private startedThisTurn = 0;
  private turnScheduled = false;

  constructor(private readonly perTurn: number) {
    if (!Number.isInteger(perTurn) || perTurn < 1) throw new RangeError("perTurn must be a positive integer");
  }

  /** Undefined: start now. Otherwise a promise settled when this request's turn comes. */
  admit(): Promise<void> | undefined {
    this.scheduleTurn();
    if (this.waiting.length === 0 && this.startedThisTurn < this.perTurn) {
      this.startedThisTurn++;
      return undefined;
    }
    return new Promise((start) => this.waiting.push(start));
  }

  /** Requests read and not yet started. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  private scheduleTurn(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    setImmediate(this.nextTurn);
  }

  // setImmediate runs after the poll phase: the sockets that became readable meanwhile have been
  // read (and their requests queued behind the ones waiting) before the next few start.
  private readonly nextTurn = (): void => {
    this.turnScheduled = false;
    const starting = this.waiting.splice(0, this.perTurn);
    this.startedThisTurn = starting.length;
    for (const start of starting) start();
    if (starting.length > 0) this.scheduleTurn();
  };
}

/**
 * Routes whose answers do no work and must not queue behind issuance: a liveness probe of a busy
 * server should say it is alive, not how long the queue is.
 */
export type UnqueuedUrls = ReadonlySet<string>;

/** Makes every route of `app` (registered after this call) start in arrival order, except `unqueued`. */
export function serveInArrivalOrder(app: FastifyInstance, perTurn: number, unqueued: UnqueuedUrls, metrics?: Metrics): void {
  const order = new ArrivalOrder(perTurn);
  metrics?.trackWaitingRequests(() => order.waitingCount);
  app.addHook("preHandler", (req, _reply, done) => {
    if (unqueued.has(req.routeOptions.url ?? "")) return done();
    const turn = order.admit();
    if (turn === undefined) return done();
    void turn.then(() => done());
  });
}
