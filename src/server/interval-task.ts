import type { Logger } from "pino";
import { taskFailureLog } from "../log.js";

export interface IntervalTask {
  /** Stops the schedule, waits for a run in progress, then runs once more when `finalRun` was asked for. */
  stop(): Promise<void>;
}

/**
 * Runs `work` every `seconds`, never two runs at once (a slow run makes the next tick skip), and
 * never keeping the process alive. A failed run is logged and the schedule goes on.
 * `finalRun`: run once more on stop, for work whose results must not be lost at shutdown.
 */
export function startIntervalTask(
  name: string,
  seconds: number,
  work: () => Promise<unknown>,
  log: Logger,
  opts: { finalRun?: boolean } = {},
): IntervalTask {
  let running: Promise<void> | undefined;
  const failures = taskFailureLog(log, "scheduled task failed");
  const runOnce = (): Promise<void> => {
    running ??= work()
      .then(
        (result) => {
          failures.succeeded();
          log.debug({ task: name, result }, "scheduled task ran");
        },
        (e: unknown) => failures.failed(e, { task: name }),
      )
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const timer = setInterval(() => {
    if (!running) void runOnce();
  }, seconds * 1000);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
      if (opts.finalRun) await runOnce();
    },
  };
}
