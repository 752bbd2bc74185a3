import Fastify from "fastify";
import { AsyncLocalStorage, AsyncResource } from "node:async_hooks";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { installBindWithoutDeprecatedAccessor } from "../../src/api/async-resource-bind.js";

// The bind every request with a body goes through (src/api/async-resource-bind.ts): the same
// binding as Node's, without the deprecated accessor that made it cost 18 µs a call.
installBindWithoutDeprecatedAccessor();

describe("AsyncResource#bind without the deprecated asyncResource accessor", () => {
  const als = new AsyncLocalStorage<string>();

  it("runs the function in the resource's async context, with the caller's this and arguments and the function's length", () => {
    const resource = als.run("request-1", () => new AsyncResource("test"));
    const bound = resource.bind(function (this: unknown, a: number, b: number) {
      return { store: als.getStore(), self: this, sum: a + b };
    });
    const self = { name: "caller" };
    expect(als.getStore()).toBeUndefined();
    expect(bound.call(self, 2, 3)).toEqual({ store: "request-1", self, sum: 5 });
    expect(bound.length).toBe(2);
    expect(Object.getOwnPropertyDescriptor(bound, "asyncResource")).toBeUndefined();
  });

  it("binds thisArg when given, and the static form binds to a new resource in the current context", () => {
    const self = { name: "bound" };
    const resource = als.run("request-2", () => new AsyncResource("test"));
    // Node's bind takes thisArg too (its typings here do not say so).
    const bindTo = resource.bind.bind(resource) as (fn: (this: unknown) => unknown, thisArg: unknown) => (this: unknown) => unknown;
    const bound = bindTo(function (this: unknown) {
      return { store: als.getStore(), self: this };
    }, self);
    expect(bound.call({ other: true })).toEqual({ store: "request-2", self });
    const statically = als.run("request-3", () => AsyncResource.bind(() => als.getStore()));
    expect(statically()).toBe("request-3");
  });

  it("refuses what is not a function, as Node's bind does", () => {
    expect(() => new AsyncResource("test").bind(42 as unknown as () => void)).toThrow(TypeError);
  });

  it("keeps fastify's handler in the context entered for the request before its body was read (real socket, JSON body)", async () => {
    const app = Fastify();
    let seq = 0;
    app.addHook("onRequest", (_req, _reply, done) => als.run(`request-${++seq}`, done));
    app.post("/echo", async (req) => ({ store: als.getStore() ?? "lost", body: req.body }));
    await app.listen({ host: "127.0.0.1", port: 0 });
    try {
      const { port } = app.server.address() as AddressInfo;
      // A body large enough to arrive in several chunks, so the parser's callback runs later, from the socket.
      const body = { pad: "x".repeat(256 * 1024) };
      const answers = await Promise.all(
        [1, 2, 3].map(() => fetch(`http://127.0.0.1:${port}/echo`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }).then((r) => r.json() as Promise<{ store: string; body: unknown }>)),
      );
      expect(answers.map((a) => a.store).sort()).toEqual(["request-1", "request-2", "request-3"]);
      expect(answers.every((a) => JSON.stringify(a.body) === JSON.stringify(body))).toBe(true);
    } finally {
      await app.close();
    }
  });
});
