import type { FastifyInstance } from "fastify";
import type { Metrics } from "../service/metrics.js";

/**
 * Starts requests in the order their connections brought them, at most `perTurn` in one turn of
 * the event loop, one request per connection at a time.
 *
 * Why (issue 10, goal 4): Node runs a request's synchronous work (authentication, validation,
 * signing, up to its audit append) inside the read callback of its socket, and libuv handles
 * every socket one epoll_wait reported before it polls again. With 1,024 busy connections one
 * such batch is about a second of work. Requests arriving meanwhile are read in the next batch in
 * the order of epoll's ready list, which is not their arrival order (a socket already listed keeps
 * its old place), so some waited one batch and others two: p99 about twice p50, and 9 to 14
 * answers per connection in the same 8 s, with a plain Node HTTPS server as with Hallmark. Holding
 * each request here and starting a few per turn keeps every batch of reads short, so requests are
 * read about when they arrive and served first come, first served: p99 1.2 times p50, 10 to 11
 * answers per connection.
 *
 * Round robin between connections: Node hands over every request a client pipelines on one
 * connection at once (200 pipelined GETs were 192 waiting handlers), so first come, first served
 * by request would let one connection's pipeline go before everyone who came after it. Here a
 * connection with several requests waiting gets one start per round, as a connection with one.
 *
 * An idle server starts a request at once (the turn's allowance is unused); only a request that
 * finds others waiting, or the turn's allowance spent, waits for a later turn. Nothing is refused
 * here: how many requests may be open at all is the connection caps' business.
 *
 * A connection that closed while its requests waited (a client that gave up on a busy server)
 * has them let go when its turn comes, without starting and without taking a start from the
 * turn: nobody can read their answers, and work done for them would only delay the living.
 */
export class ArrivalOrder {
  /** Connections with requests waiting, in the order of their turn (a Map keeps insertion order). */
  private readonly waiting = new Map<WaitingConnection, Array<(start: boolean) => void>>();
  private waitingRequests = 0;
  private abandonedRequests = 0;
  private startedThisTurn = 0;
  private turnScheduled = false;

  constructor(private readonly perTurn: number) {
    if (!Number.isInteger(perTurn) || perTurn < 1) throw new RangeError("perTurn must be a positive integer");
  }

  /**
   * Undefined: start now. Otherwise a promise settled when this request's turn comes: true to
   * start, false when its connection closed meanwhile.
   */
  admit(connection: WaitingConnection): Promise<boolean> | undefined {
    this.scheduleTurn();
    if (this.waitingRequests === 0 && this.startedThisTurn < this.perTurn) {
      this.startedThisTurn++;
      return undefined;
    }
    return new Promise((start) => {
      const queue = this.waiting.get(connection);
      if (queue) queue.push(start);
      else this.waiting.set(connection, [start]);
      this.waitingRequests++;
    });
  }

  /** Requests read and not yet started. */
  get waitingCount(): number {
    return this.waitingRequests;
  }

  /** Requests let go without starting because their connection closed while they waited. */
  get abandonedCount(): number {
    return this.abandonedRequests;
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
    let started = 0;
    while (started < this.perTurn && this.waitingRequests > 0) {
      const [connection, queue] = this.waiting.entries().next().value as [WaitingConnection, Array<(start: boolean) => void>];
      this.waiting.delete(connection);
      if (connection.destroyed) {
        this.waitingRequests -= queue.length;
        this.abandonedRequests += queue.length;
        for (const letGo of queue) letGo(false);
        continue;
      }
      const start = queue.shift()!;
      // To the back of the round, or out of it.
      if (queue.length > 0) this.waiting.set(connection, queue);
      this.waitingRequests--;
      started++;
      start(true);
    }
    this.startedThisTurn = started;
    if (started > 0) this.scheduleTurn();
  };
}

/** What the queue knows of a connection: its socket, closed or not. */
export interface WaitingConnection {
  readonly destroyed?: boolean;
}

/**
 * Makes every route of `app` (registered after this call) start in arrival order, except those
 * at `unqueued` URLs. A request let go because its connection closed is hijacked: its handler
 * never runs and nothing is written.
 */
export function serveInArrivalOrder(app: FastifyInstance, perTurn: number, unqueued: ReadonlySet<string>, metrics?: Metrics): void {
  const order = new ArrivalOrder(perTurn);
  metrics?.trackWaitingRequests(() => order.waitingCount, () => order.abandonedCount);
  app.addHook("preHandler", (req, reply, done) => {
    if (unqueued.has(req.routeOptions.url ?? "")) return done();
    const turn = order.admit(req.raw.socket);
    if (turn === undefined) return done();
    void turn.then((start) => {
      if (!start) reply.hijack();
      done();
    });
  });
}
