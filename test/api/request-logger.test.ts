import Fastify, { type FastifyBaseLogger } from "fastify";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { loggingOptions } from "../../src/api/request-logger.js";
import { createLogger } from "../../src/log.js";

/** A server logger writing JSON lines into `lines`, counting the children made of it. */
function countingLogger(level = "info") {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const log = createLogger(level, sink);
  const made = { children: 0 };
  const child = log.child;
  log.child = function (this: typeof log, ...args: Parameters<typeof log.child>) {
    made.children++;
    return child.apply(this, args);
  } as typeof log.child;
  return { log: log as unknown as FastifyBaseLogger, lines, made };
}

describe("request loggers made on first use", () => {
  it("makes no child for a request that logs nothing, and one bound to the request id, redacting as the server's logger does, for one that logs", async () => {
    const { log, lines, made } = countingLogger();
    const app = Fastify(loggingOptions(log));
    app.post("/quiet", async (req) => ({ got: req.body }));
    app.post("/talks", async (req) => {
      req.log.warn({ token: "join-token-secret" }, "talked");
      req.log.debug("below the level");
      return { level: req.log.level };
    });
    try {
      await app.ready();
      made.children = 0; // fastify makes one for the instance itself
      const quiet = await app.inject({ method: "POST", url: "/quiet", payload: { a: 1 } });
      expect(quiet.json()).toEqual({ got: { a: 1 } });
      expect(made.children).toBe(0);

      const talks = await app.inject({ method: "POST", url: "/talks", payload: {} });
      expect(talks.json()).toEqual({ level: "info" });
      expect(made.children).toBe(1);
      const line = lines.find((l) => l.msg === "talked");
      expect(line).toMatchObject({ level: 40, reqId: talks.headers["request-id"] ?? expect.any(String), token: "[redacted]", service: "hallmark" });
      expect(JSON.stringify(lines)).not.toContain("join-token-secret");
      expect(lines.some((l) => l.msg === "below the level")).toBe(false);
      // fastify's own incoming/completed lines stay off
      expect(lines.filter((l) => l.msg === "incoming request" || l.msg === "request completed")).toEqual([]);
    } finally {
      await app.close();
    }
  });

  it("reads the parent's level until made, then the child's own; a level set on it goes to the child", async () => {
    const { log, made } = countingLogger("warn");
    const app = Fastify(loggingOptions(log));
    app.get("/level", async (req) => {
      const before = req.log.level;
      req.log.level = "debug";
      return { before, after: req.log.level, parent: log.level };
    });
    try {
      await app.ready();
      made.children = 0;
      expect((await app.inject({ method: "GET", url: "/level" })).json()).toEqual({ before: "warn", after: "debug", parent: "warn" });
      expect(made.children).toBe(1);
    } finally {
      await app.close();
    }
  });

  it("lets a handler make its own child with more bindings", async () => {
    const { log, lines } = countingLogger();
    const app = Fastify(loggingOptions(log));
    app.get("/child", async (req) => {
      req.log.child({ step: "inner" }).info("from the inner child");
      return {};
    });
    try {
      await app.inject({ method: "GET", url: "/child" });
      expect(lines.find((l) => l.msg === "from the inner child")).toMatchObject({ step: "inner", reqId: expect.any(String) });
    } finally {
      await app.close();
    }
  });
});
