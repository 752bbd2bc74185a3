import type { Logger } from "pino";
import { taskFailureLog } from "../log.js";
import type { AuditRecord, AuditRepository, TransparencyRepository } from "../store/types.js";
import { checkedAuditLeafHash } from "./audit-leaf.js";
import { tlogError } from "./errors.js";
import { hashesToStore } from "./merkle.js";
import type { RecentAuditRecords } from "./recent-records.js";
import { StoredHashReader } from "./stored-hashes.js";

export interface IntegratorDeps {
  audit: AuditRepository;
  tree: TransparencyRepository;
  /** Records integrated per transaction at most: bounds the write lock an integration holds. */
  batch: number;
  /** This process's own records, not read back while held (none: every record is read). */
  recent?: RecentAuditRecords | undefined;
}

/**
 * Integration: the audit records past the integrated size become leaves. Sequencing already
 * happened (seq is assigned in the append transaction, by the datastore: one sequencer however
 * many replicas), so this only hashes: leaf hashes and every subtree they complete, written with
 * the new integrated size in one compare-and-set transaction. A kill -9 between a record's commit
 * and its integration leaves records past the integrated size, which the next run integrates:
 * the tree is always derived from the records, never a second source of truth.
 */
export async function integrateOnce(d: IntegratorDeps): Promise<number> {
  const { integratedSize } = await d.tree.state();
  const leaves = (await heldLeaves(d, integratedSize)) ?? leavesContinuing(await d.audit.list(integratedSize, d.batch), integratedSize);
  if (leaves.length === 0) return 0;
  const reader = new StoredHashReader(d.tree);
  const hashes = await hashesToStore(integratedSize, leaves, reader);
  const to = integratedSize + leaves.length;
  // Another replica integrated first: nothing written, its hashes are the same ones.
  return (await d.tree.integrate(integratedSize, to, hashes)) ? leaves.length : 0;
}

/**
 * The leaves of this process's own records next in line, if it holds them and the store's record
 * at the last of them has the chain hash it committed (one row read for the batch); else
 * undefined, and the records are read.
 */
async function heldLeaves(d: IntegratorDeps, integratedSize: number): Promise<Buffer[] | undefined> {
  if (!d.recent) return undefined;
  const { leaves, lastHash } = d.recent.leavesAfter(integratedSize, d.batch);
  if (leaves.length === 0) return undefined;
  const [stored] = await d.audit.list(integratedSize + leaves.length - 1, 1);
  if (stored?.seq === integratedSize + leaves.length && stored.hash === lastHash) return leaves;
  d.recent.forget();
  return undefined;
}

/** Integrates until no record is left (start-up catch-up). */
export async function integrateAll(d: IntegratorDeps): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await integrateOnce(d);
    if (n === 0) return total;
    total += n;
  }
}

/** The records' leaf hashes. A leaf is never made of a record that is not the next one, or not the one its chain hash says. */
function leavesContinuing(records: readonly AuditRecord[], integratedSize: number): Buffer[] {
  return records.map((r, i) => {
    if (r.seq !== integratedSize + i + 1) {
      throw tlogError("tlog_tree_diverged", `audit record ${integratedSize + i + 1} is missing (found ${r.seq}): records were removed`);
    }
    const leaf = checkedAuditLeafHash(r);
    if (!leaf) throw tlogError("tlog_tree_diverged", `audit record ${r.seq} does not match its hash: it was edited`);
    return leaf;
  });
}

export interface RunningIntegrator {
  /** An append just committed: integrate within the integration delay; wakes coalesce. */
  wake(): void;
  /** Stops the schedule after integrating whatever a pending wake was waiting for. */
  stop(): Promise<void>;
}

export interface IntegratorSchedule {
  /** How often to look for records appended by other replicas or processes. */
  pollSeconds: number;
  /**
   * How long a wake waits before integrating (0: at once). Every append wakes the integrator, so
   * without a delay each issuance paid a whole integration (a state read, a list, the hashes, a
   * write transaction); with one, the appends of a short window become one batch.
   */
  delayMs: number;
}

/**
 * Runs integration every `pollSeconds` and once per `delayMs` window after a wake, never two runs
 * at once; a wake during a run makes one more run after it (after the delay again). A failed run
 * is logged and the schedule goes on (a diverged store keeps failing: the next start refuses it).
 */
export function startIntegrator(d: IntegratorDeps, schedule: IntegratorSchedule, log: Logger): RunningIntegrator {
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  let delayed: NodeJS.Timeout | undefined;
  const failures = taskFailureLog(log, "transparency log integration failed");
  const run = (): void => {
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      do {
        again = false;
        try {
          // A full batch leaves more behind: go on at once.
          if ((await integrateOnce(d)) === d.batch) again = true;
          failures.succeeded();
        } catch (e) {
          failures.failed(e);
          return;
        }
      } while (again && !stopped);
    })().finally(() => {
      running = undefined;
    });
  };
  const runDelayed = (): void => {
    delayed = undefined;
    if (!stopped) run();
  };
  const timer = setInterval(() => {
    if (!stopped) run();
  }, schedule.pollSeconds * 1000);
  timer.unref();
  return {
    wake() {
      if (stopped || delayed) return;
      delayed = setTimeout(runDelayed, schedule.delayMs);
      delayed.unref();
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      const pending = delayed !== undefined;
      if (delayed) clearTimeout(delayed);
      delayed = undefined;
      await running;
      // Records a wake was waiting for are integrated now rather than at the next start.
      if (pending) {
        run();
        await running;
      }
    },
  };
}
