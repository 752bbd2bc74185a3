import { join } from "node:path";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { AuditLog } from "../../src/audit/log.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { Store, TransparencyRepository } from "../../src/store/types.js";
import { startIntegrator } from "../../src/transparency/integrator.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Integration batching (issue 10): every append wakes the integrator, but it integrates once per
 * `transparency.integrationDelay` window, not once per append. Batches are counted through the
 * real store's `integrate` calls; nothing here measures time.
 */
const dir = tempDir("integrator-batching");
afterAll(() => dir.remove());
const log = pino({ level: "silent" });

/** A SQLite store whose tree writes are counted (each call is one integration transaction). */
async function countedStore(name: string): Promise<{ store: Store; tree: TransparencyRepository; batches: () => number }> {
  const store = await openSqliteStore(join(dir.path, `${name}.db`));
  let batches = 0;
  const tree: TransparencyRepository = {
    state: () => store.transparency.state(),
    readHashes: (ids) => store.transparency.readHashes(ids),
    saveCheckpoint: (previous, cp) => store.transparency.saveCheckpoint(previous, cp),
    integrate: async (from, to, hashes) => {
      batches += 1;
      return store.transparency.integrate(from, to, hashes);
    },
  };
  return { store, tree, batches: () => batches };
}

const appendMany = async (audit: AuditLog, n: number) => {
  for (let i = 0; i < n; i++) await audit.append({ time: new Date(), event: "issue_jwt", outcome: "success", actor: "spiffe://example.org/node", details: { i } });
};

describe("transparency integrator batching", () => {
  it("integrates the appends of one delay window as one batch, not one batch per append", async () => {
    const { store, tree, batches } = await countedStore("window");
    const audit = new AuditLog(store.audit);
    // A window far longer than the test: every append below falls into the first one.
    const integrator = startIntegrator({ audit: store.audit, tree, batch: 1000 }, { pollSeconds: 3600, delayMs: 60_000 }, log);
    audit.onAppend(() => integrator.wake());
    await appendMany(audit, 100);
    expect(batches()).toBe(0);
    expect((await store.transparency.state()).integratedSize).toBe(0);
    // Stopping integrates what the pending wake was waiting for: one batch of all 100.
    await integrator.stop();
    expect(batches()).toBe(1);
    expect((await store.transparency.state()).integratedSize).toBe(100);
    await store.close();
  });

  it("integrates by itself once the window passes, and a window's batch respects integrationBatch", async () => {
    const { store, tree, batches } = await countedStore("passes");
    const audit = new AuditLog(store.audit);
    const integrator = startIntegrator({ audit: store.audit, tree, batch: 30 }, { pollSeconds: 3600, delayMs: 5 }, log);
    audit.onAppend(() => integrator.wake());
    await Promise.all([appendMany(audit, 50), appendMany(audit, 50)]);
    while ((await store.transparency.state()).integratedSize < 100) await new Promise((r) => setTimeout(r, 10));
    // At least ceil(100 / 30) transactions: a window's backlog is still cut into integrationBatch pieces.
    expect(batches()).toBeGreaterThanOrEqual(4);
    await integrator.stop();
    await store.close();
  });
});
