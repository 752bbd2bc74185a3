/**
 * The repository `repo` with every method run through `call(op, run)`, `op` being
 * `name.method`: the one place where an engine's health tracker sees every call (storage
 * failures become store_unavailable there), for SQLite and PostgreSQL alike.
 */
export function guardRepository<T extends object>(
  name: string,
  repo: T,
  call: <R>(op: string, run: () => R | Promise<R>) => Promise<R>,
): T {
  const guarded = Object.create(repo) as T;
  const proto = Object.getPrototypeOf(repo) as Record<string, unknown>;
  for (const method of Object.getOwnPropertyNames(proto)) {
    const fn = proto[method];
    if (method === "constructor" || typeof fn !== "function") continue;
    Object.defineProperty(guarded, method, {
      value: (...args: unknown[]) => call(`${name}.${method}`, () => (fn as (...a: unknown[]) => unknown).apply(repo, args)),
    });
  }
  return guarded;
}
