import { expect, it } from "vitest";
import type { EntryRecord, Store } from "../../src/store/types.js";
import { forEachEngine } from "../helpers/store-engines.js";

/**
 * The store's coordination of replicas, on both engines: a committed entry change or bundle
 * sequence bump is announced (on PostgreSQL to every store open on the database, its own
 * included; a change that rolls back is not); the named lock admits one holder at a time.
 */
const entry = (id: string): EntryRecord => ({
  id,
  spiffeId: `spiffe://example.org/w/${id}`,
  parentId: "spiffe://example.org/node/a",
  selectors: ["unix:uid:1"],
  dnsNames: [],
  admin: false,
  createdAt: new Date(0),
});

/** Counts the notices of `topic`; `until(n)` waits (bounded) for n of them. */
function counter(store: Store, topic: "entries" | "caKeys"): { count: () => number; stop: () => void; until(n: number): Promise<number> } {
  let n = 0;
  const stop = store.coordination.onChange(topic, () => void n++);
  return {
    count: () => n,
    stop,
    async until(target) {
      for (let i = 0; i < 100 && n < target; i++) await new Promise((r) => setTimeout(r, 20));
      return n;
    },
  };
}

forEachEngine("store coordination", (engine) => {
  it("announces committed entry changes and bundle bumps, on PostgreSQL to every store on the database; not a refused change", async () => {
    const db = await engine.newDatabase();
    const a = await db.open();
    const others = engine.name === "postgres" ? [await db.open()] : [];
    try {
      const heard = [a, ...others].map((s) => counter(s, "entries"));
      const keys = [a, ...others].map((s) => counter(s, "caKeys"));
      await a.entries.create(entry("e1"));
      await expect(a.entries.create(entry("e1"))).rejects.toMatchObject({ code: "entry_exists" });
      await a.entries.delete("e1", new Date(1));
      await a.caKeys.bumpBundleSequence();
      for (const h of heard) expect(await h.until(2)).toBe(2);
      for (const k of keys) expect(await k.until(1)).toBe(1);
      // Nothing more arrives late (the refused creation rolled back its notice with it).
      await new Promise((r) => setTimeout(r, 200));
      expect(heard.map((h) => h.count())).toEqual(heard.map(() => 2));
      for (const h of [...heard, ...keys]) h.stop();
    } finally {
      await Promise.all([a, ...others].map((s) => s.close()));
    }
  });

  it("admits one holder of a named lock at a time, across stores on one database", async () => {
    const db = await engine.newDatabase();
    const stores = engine.name === "postgres" ? [await db.open(), await db.open()] : [await db.open()];
    try {
      const events: string[] = [];
      const holder = (s: Store, name: string) =>
        s.coordination.exclusively("test-lock", async () => {
          events.push(`${name} in`);
          await new Promise((r) => setTimeout(r, 100));
          events.push(`${name} out`);
        });
      await Promise.all(stores.flatMap((s, i) => [holder(s, `${i}a`), holder(s, `${i}b`)]));
      // Every "in" is followed by its own "out" before the next "in".
      for (let i = 0; i < events.length; i += 2) expect(events[i + 1]).toBe(events[i]!.replace(" in", " out"));
      expect(events).toHaveLength(stores.length * 4);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });
});
