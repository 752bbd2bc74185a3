import type { ChangeTopic, StoreCoordination } from "./types.js";

/** Listeners by topic: what every engine's StoreCoordination hands its notices to. */
export class ChangeFeed {
  private readonly listeners = new Map<ChangeTopic, Set<() => void>>();

  on(topic: ChangeTopic, listener: () => void): () => void {
    let set = this.listeners.get(topic);
    if (!set) this.listeners.set(topic, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  emit(topic: ChangeTopic): void {
    // A listener that throws must not keep the others from hearing of the change.
    for (const l of [...(this.listeners.get(topic) ?? [])]) {
      try {
        l();
      } catch {
        // the listener's own business
      }
    }
  }
}

/**
 * The coordination of an engine whose notices are not sent by the database itself (SQLite): the
 * store calls `announce` after each of its own committed writes, and the coordination decides
 * who hears it (this process only, or every process of a `server.workers` group as well).
 */
export interface ProcessCoordination extends StoreCoordination {
  announce(topic: ChangeTopic): void;
}

/**
 * One process owns the datastore (SQLite): its own writes are all the changes there are, and the
 * lock only has to queue this process's callers (the data directory's lock keeps other servers out).
 */
export function singleProcessCoordination(): ProcessCoordination {
  const feed = new ChangeFeed();
  const queues = new Map<string, Promise<unknown>>();
  return {
    onChange: (topic, listener) => feed.on(topic, listener),
    announce: (topic) => feed.emit(topic),
    exclusively<T>(name: string, body: () => Promise<T>): Promise<T> {
      const run = (queues.get(name) ?? Promise.resolve()).then(body, body);
      const tail = run.catch(() => undefined);
      queues.set(name, tail);
      // Forget an idle name, so that the map does not grow with names used once.
      void tail.then(() => queues.get(name) === tail && queues.delete(name));
      return run;
    },
  };
}

/**
 * `repo` with `emit()` called after each of `methods` resolves: the engine-independent way to
 * announce a process's own committed writes.
 */
export function announcingWrites<T extends object>(repo: T, methods: ReadonlyArray<keyof T & string>, emit: () => void): T {
  const wrapped = Object.create(repo) as T;
  for (const method of methods) {
    const fn = repo[method] as unknown as (...a: unknown[]) => Promise<unknown>;
    Object.defineProperty(wrapped, method, {
      value: async (...args: unknown[]) => {
        const result = await fn.apply(repo, args);
        emit();
        return result;
      },
    });
  }
  return wrapped;
}
