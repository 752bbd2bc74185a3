import { existsSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { HallmarkError } from "../errors.js";
import { shippedFile } from "../project-files.js";
import type { StoreSettings } from "../store/open.js";
import type { AuditCheckpoint, AuditVerification } from "./log.js";

export interface VerifyWorkerInput {
  /** Where the datastore is: the worker opens it read-only with a connection of its own. */
  store: StoreSettings;
  checkpoint?: AuditCheckpoint | undefined;
}

export type VerifyWorkerAnswer = { result: AuditVerification } | { error: { code: string; message: string } };

/**
 * Full audit verification off the event loop: each call runs verify-worker in a worker thread
 * with its own read-only connection to the datastore, so the server keeps answering while it walks.
 */
export class WorkerAuditVerifier {
  private readonly running = new Set<Worker>();

  constructor(private readonly store: StoreSettings) {}

  verify(checkpoint?: AuditCheckpoint): Promise<AuditVerification> {
    const input: VerifyWorkerInput = { store: this.store, checkpoint };
    const worker = new Worker(verifyWorkerEntry(), { workerData: input });
    this.running.add(worker);
    return new Promise((resolve, reject) => {
      worker.once("message", (answer: VerifyWorkerAnswer) => {
        if ("result" in answer) resolve(answer.result);
        else reject(new HallmarkError(answer.error.code, answer.error.message));
      });
      worker.once("error", (cause) => reject(new HallmarkError("internal", "the audit verification worker failed", { cause })));
      // A settled promise ignores this: it only catches a worker that ended without answering.
      worker.once("exit", (code) => {
        this.running.delete(worker);
        reject(new HallmarkError("unavailable", `the audit verification stopped before it finished (worker exit ${code})`));
      });
    });
  }

  /** Stops verifications still running (server shutdown): their callers get `unavailable`. */
  async close(): Promise<void> {
    await Promise.all([...this.running].map((w) => w.terminate()));
  }
}

/**
 * The worker's JavaScript file. Built, it sits beside this module. Run from the TypeScript sources
 * (the tests), a Worker cannot load verify-worker.ts, so the build of it in dist/ is used (the test
 * setup builds dist/ before any test runs).
 */
function verifyWorkerEntry(): URL {
  if (import.meta.url.endsWith(".js")) return new URL("./verify-worker.js", import.meta.url);
  const built = shippedFile("dist/src/audit/verify-worker.js");
  if (!existsSync(built)) {
    throw new HallmarkError("unavailable", `the audit verification worker is not built (${built}): run npm run build`, {
      internal: fileURLToPath(import.meta.url),
    });
  }
  return pathToFileURL(built);
}
