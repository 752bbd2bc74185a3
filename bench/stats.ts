/** Percentiles and rate lines, one format for every benchmark. */
export function percentile(sortedMs: number[], p: number): number {
  if (sortedMs.length === 0) return Number.NaN;
  const i = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[i] ?? Number.NaN;
}

export interface Measured {
  ops: number;
  seconds: number;
  latenciesMs: number[];
}

export function summary(label: string, m: Measured): string {
  const sorted = [...m.latenciesMs].sort((a, b) => a - b);
  const rate = m.ops / m.seconds;
  const lat = sorted.length
    ? `  p50 ${percentile(sorted, 50).toFixed(2)} ms  p99 ${percentile(sorted, 99).toFixed(2)} ms`
    : "";
  return `${label.padEnd(58)} ${rate.toFixed(0).padStart(8)} /s${lat}`;
}

/** Runs `op` with `concurrency` in flight for `seconds`, as fast as it goes. */
export async function closedLoop(op: () => Promise<unknown>, concurrency: number, seconds: number): Promise<Measured> {
  const latenciesMs: number[] = [];
  const end = performance.now() + seconds * 1000;
  let ops = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        await op();
        latenciesMs.push(performance.now() - t);
        ops++;
      }
    }),
  );
  return { ops, seconds: (performance.now() - start) / 1000, latenciesMs };
}

/** Offers `rate` operations per second for `seconds` (open loop: latency includes queueing). */
export async function openLoop(op: () => Promise<unknown>, rate: number, seconds: number): Promise<Measured> {
  const latenciesMs: number[] = [];
  const total = Math.max(1, Math.floor(rate * seconds));
  const start = performance.now();
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    inFlight.push(
      (async () => {
        const t = performance.now();
        await op();
        latenciesMs.push(performance.now() - Math.min(due, t));
      })(),
    );
  }
  await Promise.all(inFlight);
  return { ops: total, seconds: (performance.now() - start) / 1000, latenciesMs };
}

/** Runs a synchronous `op` back to back on this thread for `seconds`: CPU cost on one core. */
export function serialLoop(op: () => void, seconds: number): Measured {
  const latenciesMs: number[] = [];
  const start = performance.now();
  const end = start + seconds * 1000;
  let ops = 0;
  while (performance.now() < end) {
    const t = performance.now();
    op();
    latenciesMs.push(performance.now() - t);
    ops++;
  }
  return { ops, seconds: (performance.now() - start) / 1000, latenciesMs };
}
