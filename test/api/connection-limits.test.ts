import Fastify, { type FastifyInstance } from "fastify";
import { type AddressInfo, connect, type Socket } from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { applyConnectionLimits, type ConnectionLimits } from "../../src/api/connection-limits.js";
import { Metrics } from "../../src/service/metrics.js";

const LIMITS: Omit<ConnectionLimits, "maxOpenRequestsPerConnection"> = {
  headersTimeout: 10,
  requestTimeout: 30,
  idleTimeout: 30,
  maxConnections: 100,
  maxConnectionsPerAddress: 100,
  maxHeadersCount: 64,
};

/** A raw connection to `port` that records what the server sends and whether it closed. */
async function rawConnection(port: number): Promise<{ socket: Socket; received: () => string; closed: () => boolean }> {
  const socket = connect({ host: "127.0.0.1", port });
  let received = "";
  let closed = false;
  socket.on("data", (d: Buffer) => (received += d.toString("latin1")));
  socket.on("error", () => undefined);
  socket.on("close", () => (closed = true));
  await new Promise((resolve) => socket.once("connect", resolve));
  return { socket, received: () => received, closed: () => closed };
}

const pipelined = (paths: string[]) => paths.map((p) => `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`).join("");
const answers = (text: string) => text.split("HTTP/1.1 ").length - 1;

let app: FastifyInstance | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

/**
 * An HTTP server whose GET /held/:i requests stay open until `release()`, and GET /n/:i answers i;
 * with `cap`, under applyConnectionLimits. `started` counts the requests its handlers were given.
 */
async function serverWith(cap: number | undefined) {
  app = Fastify();
  const metrics = new Metrics();
  if (cap !== undefined) applyConnectionLimits(app.server, { ...LIMITS, maxOpenRequestsPerConnection: cap }, metrics);
  let started = 0;
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  app.get("/held/:i", async () => {
    started++;
    await released;
    return "held";
  });
  app.get<{ Params: { i: string } }>("/n/:i", async (req) => req.params.i);
  await app.listen({ host: "127.0.0.1", port: 0 });
  const port = (app.server.address() as AddressInfo).port;
  const refused = () => Number(/reason="open_requests_cap"\} (\d+)/.exec(metrics.render())?.[1] ?? 0);
  return { port, started: () => started, release, refused };
}

describe("the open requests of one connection (maxOpenRequestsPerConnection)", () => {
  it("control: without the cap, Node hands the application every request pipelined on one connection at once", async () => {
    const s = await serverWith(undefined);
    const c = await rawConnection(s.port);
    c.socket.write(pipelined(Array.from({ length: 200 }, (_, i) => `/held/${i}`)));
    await vi.waitFor(() => expect(s.started()).toBe(200));
    s.release();
    await vi.waitFor(() => expect(answers(c.received())).toBe(200));
    c.socket.destroy();
  });

  it("serves as many pipelined requests as the cap, in order, and frees each slot when its answer is sent", async () => {
    const s = await serverWith(4);
    const c = await rawConnection(s.port);
    c.socket.write(pipelined(["/n/0", "/n/1", "/n/2", "/n/3"]));
    await vi.waitFor(() => expect(answers(c.received())).toBe(4));
    c.socket.write(pipelined(["/n/4", "/n/5", "/n/6", "/n/7"]));
    await vi.waitFor(() => expect(answers(c.received())).toBe(8));
    const bodies = c.received().split("HTTP/1.1 ").slice(1).map((a) => a.split("\r\n\r\n")[1]);
    expect(bodies).toEqual(["0", "1", "2", "3", "4", "5", "6", "7"]);
    expect(c.closed()).toBe(false);
    expect(s.refused()).toBe(0);
    c.socket.destroy();
  });

  it("closes the connection that brings one request more than the cap, and none past the cap reaches a handler", async () => {
    const s = await serverWith(4);
    const flood = await rawConnection(s.port);
    flood.socket.write(pipelined(Array.from({ length: 20_000 }, (_, i) => `/held/${i}`)));
    await vi.waitFor(() => expect(flood.closed()).toBe(true));
    expect(s.started()).toBe(4);
    expect(s.refused()).toBe(1);
    // Other connections are served, and the four held requests finish without anyone to answer.
    s.release();
    const other = await rawConnection(s.port);
    other.socket.write(pipelined(["/n/42"]));
    await vi.waitFor(() => expect(other.received()).toMatch(/^HTTP\/1\.1 200 [\s\S]*\r\n\r\n42$/));
    expect(s.started()).toBe(4);
    other.socket.destroy();
  });

  it("counts requests open, not requests made: a keep-alive connection may make any number one after another", async () => {
    const s = await serverWith(1);
    const c = await rawConnection(s.port);
    for (let i = 0; i < 20; i++) {
      c.socket.write(pipelined([`/n/${i}`]));
      await vi.waitFor(() => expect(answers(c.received())).toBe(i + 1));
    }
    expect(c.closed()).toBe(false);
    expect(s.refused()).toBe(0);
    c.socket.destroy();
  });
});
