import Fastify, { type FastifyInstance } from "fastify";
import { Agent, request } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { ArrivalOrder, serveInArrivalOrder } from "../../src/api/arrival-order.js";
import { Metrics } from "../../src/service/metrics.js";

/** Counts turns of the event loop until stopped: `now()` is the current turn's number. */
function turnCounter(): { now: () => number; stop: () => void } {
  let turn = 0;
  let ticking = true;
  const tick = () => {
    turn++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  return { now: () => turn, stop: () => (ticking = false) };
}

/** GET on kept-alive connections of `agent` to the local `port`; resolves to the status once the body is read. */
function getOn(port: number, agent: Agent): (path: string) => Promise<number> {
  return (path) =>
    new Promise<number>((resolve, reject) => {
      const r = request({ host: "127.0.0.1", port, path, agent }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      });
      r.on("error", reject);
      r.end();
    });
}

/** Resolves after `n` turns of the event loop (each setImmediate runs in the next turn's check phase). */
const turns = (n: number) => new Promise<void>((resolve) => (n <= 0 ? resolve() : setImmediate(() => void turns(n - 1).then(resolve))));

describe("ArrivalOrder", () => {
  it("starts at once while the turn's allowance lasts and nobody waits, then queues", async () => {
    const order = new ArrivalOrder(3);
    const c = {};
    expect([order.admit(c), order.admit(c), order.admit(c)]).toEqual([undefined, undefined, undefined]);
    const fourth = order.admit(c);
    expect(fourth).toBeInstanceOf(Promise);
    expect(order.waitingCount).toBe(1);
    await fourth;
    expect(order.waitingCount).toBe(0);
  });

  it("starts the waiting in the order their connections came, at most perTurn in one turn", async () => {
    const order = new ArrivalOrder(4);
    const counter = turnCounter();
    const started: Array<{ i: number; turn: number }> = [];
    const all = Array.from({ length: 22 }, (_, i) => {
      const p = order.admit({});
      if (p === undefined) {
        started.push({ i, turn: counter.now() });
        return Promise.resolve();
      }
      return p.then(() => started.push({ i, turn: counter.now() }));
    });
    await Promise.all(all);
    counter.stop();
    expect(started.map((s) => s.i)).toEqual(Array.from({ length: 22 }, (_, i) => i));
    const perTurn = new Map<number, number>();
    for (const s of started) perTurn.set(s.turn, (perTurn.get(s.turn) ?? 0) + 1);
    expect(Math.max(...perTurn.values())).toBe(4);
    // 22 requests at 4 a turn: the first 4 at once, the other 18 over 5 more turns.
    expect(perTurn.size).toBe(6);
  });

  it("a newcomer does not overtake the waiting, even when the turn has allowance left", async () => {
    const order = new ArrivalOrder(2);
    const log: string[] = [];
    order.admit({});
    order.admit({});
    const c = order.admit({})!.then(() => log.push("c"));
    await turns(1); // c started in this turn, which has one start left
    const d = order.admit({});
    expect(d).toBeUndefined();
    log.push("d");
    const e = order.admit({})!.then(() => log.push("e"));
    await Promise.all([c, e]);
    expect(log).toEqual(["c", "d", "e"]);
  });

  it("takes the connections in turn: a pipeline of six does not go before those who came after it", async () => {
    const order = new ArrivalOrder(2);
    const [a, b, c] = [{}, {}, {}];
    const log: string[] = [];
    const request = (connection: object, name: string) => {
      const p = order.admit(connection);
      return p === undefined ? (log.push(name), Promise.resolve()) : p.then(() => void log.push(name));
    };
    const all = [...["a1", "a2", "a3", "a4", "a5", "a6"].map((n) => request(a, n)), request(b, "b1"), request(c, "c1"), request(b, "b2")];
    expect(order.waitingCount).toBe(7);
    await Promise.all(all);
    // a1 and a2 at once; then one of each waiting connection per round, two starts a turn.
    expect(log).toEqual(["a1", "a2", "a3", "b1", "c1", "a4", "b2", "a5", "a6"]);
    expect(order.waitingCount).toBe(0);
  });

  it("lets a closed connection's waiting requests go without starting them or spending the turn's allowance", async () => {
    const order = new ArrivalOrder(1);
    const gone = { destroyed: false };
    const alive = { destroyed: false };
    expect(order.admit(gone)).toBeUndefined();
    const outcomes: string[] = [];
    const waits = [
      order.admit(gone)!.then((start) => outcomes.push(`gone:${start}`)),
      order.admit(gone)!.then((start) => outcomes.push(`gone:${start}`)),
      order.admit(alive)!.then((start) => outcomes.push(`alive:${start}`)),
    ];
    gone.destroyed = true;
    await turns(1);
    // One turn, one start: the living connection's, though the closed one was ahead of it.
    expect(outcomes).toEqual(["gone:false", "gone:false", "alive:true"]);
    await Promise.all(waits);
    expect(order.waitingCount).toBe(0);
    expect(order.abandonedCount).toBe(2);
  });

  it("refuses an allowance that is not a positive integer", () => {
    expect(() => new ArrivalOrder(0)).toThrow(RangeError);
    expect(() => new ArrivalOrder(1.5)).toThrow(RangeError);
  });
});

describe("serveInArrivalOrder on a real listener", () => {
  let app: FastifyInstance | undefined;
  let agent: Agent | undefined;
  afterEach(async () => {
    agent?.destroy();
    await app?.close();
  });

  /**
   * 40 requests on 40 connections arrive at once, so that one poll reads them all: the situation
   * of a server with many busy connections. Each handler records the turn
   * it started in and the order its request was read in (onRequest, before the queue).
   */
  async function burst(withOrder: boolean) {
    const metrics = new Metrics();
    app = Fastify();
    if (withOrder) serveInArrivalOrder(app, 4, new Set(["/probe"]), metrics);
    const read: number[] = [];
    const started: Array<{ id: number; turn: number }> = [];
    // Read by the handlers; counting starts with the burst.
    const clock = { turn: () => 0 };
    const turn = () => clock.turn();
    app.addHook("onRequest", async (req) => {
      read.push(Number((req.query as { id: string }).id));
    });
    app.get("/work", async (req) => {
      started.push({ id: Number((req.query as { id: string }).id), turn: turn() });
      return { ok: true };
    });
    let probeTurn = -1;
    let waitingAtProbe = -1;
    app.get("/probe", async () => {
      probeTurn = turn();
      waitingAtProbe = Number(/hallmark_requests_waiting (\d+)/.exec(metrics.render())?.[1]);
      return { ok: true };
    });
    await app.listen({ host: "127.0.0.1", port: 0 });
    const port = (app.server.address() as AddressInfo).port;
    agent = new Agent({ keepAlive: true, maxSockets: 64 });
    const get = getOn(port, agent);
    // Connections first, so that the burst's requests all travel on open sockets.
    await Promise.all(Array.from({ length: 41 }, (_, i) => get(`/work?id=${1000 + i}`)));
    read.length = 0;
    started.length = 0;
    const counter = turnCounter();
    clock.turn = counter.now;
    // The client writes all 41 in one tick (on kept-alive sockets), so the server's next poll reads them all.
    const answers = [...Array.from({ length: 40 }, (_, i) => get(`/work?id=${i}`)), get("/probe")];
    const statuses = await Promise.all(answers);
    counter.stop();
    const perTurn = new Map<number, number>();
    for (const s of started) perTurn.set(s.turn, (perTurn.get(s.turn) ?? 0) + 1);
    return { statuses, read, started, perTurn, probeTurn, firstTurn: Math.min(...started.map((s) => s.turn)), waitingAtProbe };
  }

  it("without it, one poll starts every request it read (the control)", async () => {
    const r = await burst(false);
    expect(r.statuses.every((s) => s === 200)).toBe(true);
    expect(Math.max(...r.perTurn.values())).toBeGreaterThan(4);
  });

  it("starts at most 4 requests a turn, in the order they were read, and probes at once", async () => {
    const r = await burst(true);
    expect(r.statuses.every((s) => s === 200)).toBe(true);
    expect(r.started).toHaveLength(40);
    expect(Math.max(...r.perTurn.values())).toBeLessThanOrEqual(4);
    expect(r.started.map((s) => s.id)).toEqual(r.read.filter((id) => id < 1000));
    // The probe is not queued behind the 36 requests still waiting when it was read.
    expect(r.probeTurn).toBeLessThanOrEqual(r.firstTurn + 1);
    expect(r.waitingAtProbe).toBeGreaterThan(0);
  });

  it("does not let one connection's pipeline of 20 go before the 5 connections whose requests came after its first", async () => {
    app = Fastify();
    serveInArrivalOrder(app, 1, new Set());
    const started: string[] = [];
    app.get("/work", async (req) => {
      started.push((req.query as { id: string }).id);
      return { ok: true };
    });
    await app.listen({ host: "127.0.0.1", port: 0 });
    const port = (app.server.address() as AddressInfo).port;
    agent = new Agent({ keepAlive: true, maxSockets: 8 });
    const get = getOn(port, agent);
    await Promise.all(Array.from({ length: 5 }, (_, i) => get(`/work?id=warm${i}`)));
    const pipeline = connect(port, "127.0.0.1");
    await new Promise((resolve) => pipeline.once("connect", resolve));
    let answered = "";
    const allAnswered = new Promise<void>((resolve) =>
      pipeline.on("data", (d: Buffer) => {
        answered += d.toString();
        if ((answered.match(/HTTP\/1\.1 200/g) ?? []).length === 20) resolve();
      }),
    );
    started.length = 0;
    pipeline.write(Array.from({ length: 20 }, (_, i) => `GET /work?id=p${i} HTTP/1.1\r\nHost: x\r\n\r\n`).join(""));
    // The pipeline is read (its first request started) before the five others are sent: one start a turn, the rest wait.
    while (!started.includes("p0")) await turns(1);
    const singles = Array.from({ length: 5 }, (_, i) => get(`/work?id=s${i}`));
    expect(await Promise.all(singles)).toEqual([200, 200, 200, 200, 200]);
    await allAnswered;
    pipeline.destroy();
    expect(started).toHaveLength(25);
    expect(started.filter((id) => id.startsWith("p"))).toEqual(Array.from({ length: 20 }, (_, i) => `p${i}`));
    // First come, first served by request would start the five after the whole pipeline.
    const lastSingle = Math.max(...["s0", "s1", "s2", "s3", "s4"].map((id) => started.indexOf(id)));
    expect(started.indexOf("p19")).toBeGreaterThan(lastSingle);
    expect(lastSingle).toBeLessThan(started.indexOf("p12"));
  });

  it("never starts the requests of a connection that closed while they waited, and counts them", async () => {
    app = Fastify();
    const metrics = new Metrics();
    serveInArrivalOrder(app, 1, new Set(), metrics);
    const read: string[] = [];
    const started: string[] = [];
    app.addHook("onRequest", async (req) => {
      read.push((req.query as { id: string }).id);
    });
    app.get("/work", async (req) => {
      const id = (req.query as { id: string }).id;
      started.push(id);
      // The client is gone while a2..a6 wait their turn (one start a turn).
      if (id === "a1") req.raw.socket.destroy();
      return { ok: true };
    });
    await app.listen({ host: "127.0.0.1", port: 0 });
    const port = (app.server.address() as AddressInfo).port;
    const pipeline = connect(port, "127.0.0.1");
    pipeline.on("error", () => undefined);
    await new Promise((resolve) => pipeline.once("connect", resolve));
    const ids = ["a1", "a2", "a3", "a4", "a5", "a6"];
    pipeline.write(ids.map((id) => `GET /work?id=${id} HTTP/1.1\r\nHost: x\r\n\r\n`).join(""));
    await new Promise((resolve) => pipeline.once("close", resolve));
    // All six were read, so five waited: the situation the test is about.
    await turns(3);
    expect(read).toEqual(ids);
    expect(started).toEqual(["a1"]);
    expect(metrics.render()).toMatch(/^hallmark_requests_abandoned_total 5$/m);
    expect(metrics.render()).toMatch(/^hallmark_requests_waiting 0$/m);
    // Others are served as before.
    agent = new Agent({ keepAlive: true });
    expect(await getOn(port, agent)("/work?id=b1")).toBe(200);
    expect(started).toEqual(["a1", "b1"]);
  });
});
