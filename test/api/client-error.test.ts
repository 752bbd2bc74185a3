import Fastify from "fastify";
import { connect, type Socket } from "node:net";
import { Writable } from "node:stream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { problemServerOptions } from "../../src/api/problem.js";
import { createLogger } from "../../src/log.js";

/**
 * What the server answers when Node reports a client connection's error before any request was
 * read ('clientError'): a problem for what we know (a deadline, a parser finding), and for what we
 * do not, a closed connection and a warning, never a 500 that would blame the server.
 */
const lines: Array<Record<string, unknown>> = [];
const log = createLogger("info", new Writable({ write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk)) as Record<string, unknown>), done()) }));
const app = Fastify({ loggerInstance: log as never, ...problemServerOptions(log) });
let port = 0;

beforeAll(async () => {
  await app.listen({ host: "127.0.0.1", port: 0 });
  port = (app.server.address() as { port: number }).port;
});
afterAll(() => app.close());

/** Connects, lets the server report `error` on its side of the connection, and returns what the client then receives. */
async function afterClientError(error: Error): Promise<string> {
  const accepted = new Promise<Socket>((resolve) => app.server.once("connection", resolve));
  const client = connect(port, "127.0.0.1");
  const serverSide = await accepted;
  let received = "";
  client.on("data", (d) => (received += String(d)));
  const closed = new Promise((resolve) => client.on("close", resolve));
  app.server.emit("clientError", error, serverSide);
  await closed;
  return received;
}

it("answers a request deadline with 408 problem+json and closes", async () => {
  const answer = await afterClientError(Object.assign(new Error("timeout"), { code: "ERR_HTTP_REQUEST_TIMEOUT" }));
  expect(answer).toMatch(/^HTTP\/1\.1 408 /);
  expect(answer).toContain('"code":"request_timeout"');
});

it("closes the connection without an answer on an error it does not know, and says so in the log", async () => {
  const answer = await afterClientError(Object.assign(new Error("something odd"), { code: "ESOMETHING" }));
  expect(answer).toBe("");
  expect(lines.filter((l) => l.msg === "closed a connection on an unexpected client error").map((l) => l.clientError)).toEqual(["ESOMETHING"]);
});
