import { AsyncResource } from "node:async_hooks";

/**
 * AsyncResource#bind without the deprecated `asyncResource` accessor.
 *
 * Fastify binds a callback with AsyncResource#bind for every request that has a body (its
 * content-type parser), so that the handler runs in the request's async context. Node 20's bind
 * also defines an `asyncResource` accessor on each bound function (deprecated, DEP0172) whose
 * getter and setter are each wrapped by util.deprecate: 18 µs of CPU per call in isolation, and
 * measured with bench/speed.ts (two alternated pairs of runs) a JWT-SVID request cost 0.445-0.470 ms
 * of server CPU with it and 0.375-0.398 ms without, an X.509-SVID request 0.83-0.88 and 0.76-0.84 ms.
 *
 * The bound function here runs `fn` in the resource's scope with the caller's `this` (or
 * `thisArg`) and arguments, and has `fn`'s length, as Node's does; only the deprecated property is
 * missing, which nothing in Hallmark or its dependencies reads. Installed only where bind defines
 * that property (a Node that dropped it keeps its own bind); true when installed.
 */
export function installBindWithoutDeprecatedAccessor(): boolean {
  if (AsyncResource.prototype.bind === (bindInScope as unknown)) return true;
  const probe = new AsyncResource("hallmark-probe").bind(() => undefined);
  if (!Object.getOwnPropertyDescriptor(probe, "asyncResource")) return false;
  AsyncResource.prototype.bind = bindInScope as typeof AsyncResource.prototype.bind;
  return true;
}

type Callback = (this: unknown, ...args: unknown[]) => unknown;

function bindInScope(this: AsyncResource, fn: Callback, thisArg?: unknown): Callback {
  return boundIn(this, fn, thisArg);
}

function boundIn(resource: AsyncResource, fn: Callback, thisArg: unknown): Callback {
  if (typeof fn !== "function") throw new TypeError('The "fn" argument must be of type function');
  const bound: Callback =
    thisArg === undefined
      ? function (this: unknown, ...args: unknown[]) {
          return resource.runInAsyncScope(fn, this, ...args);
        }
      : (...args: unknown[]) => resource.runInAsyncScope(fn, thisArg, ...args);
  Object.defineProperty(bound, "length", { configurable: true, enumerable: false, value: fn.length, writable: false });
  return bound;
}
