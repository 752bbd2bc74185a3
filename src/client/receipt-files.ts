import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { writeFileAtomic } from "./files.js";
import { LogClient, type LogServerTls, type ReceiptJson } from "./log-client.js";

/** The receipt's file name beside an SVID (the contract). */
export const RECEIPT_FILE = "receipt.json";
const POLL_MS = 250;

/**
 * Waits (bounded by `waitMs`) until a checkpoint covers leaf `index`, then returns its receipt;
 * undefined when none does in time. The log signs every checkpointInterval (1 s by default), so a
 * few of those are enough unless the log is stalled; the caller says how to fetch it later.
 */
export async function awaitReceipt(log: LogClient, index: number, waitMs: number, signal?: AbortSignal): Promise<ReceiptJson | undefined> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const r = await log.receipt(index);
    if (r || Date.now() + POLL_MS > deadline || signal?.aborted) return r;
    // An aborted wait (the agent stopping) ends here, without a receipt.
    if (!(await sleep(POLL_MS, true, { signal }).catch(() => false))) return undefined;
  }
}

export function writeReceiptFile(path: string, r: ReceiptJson): void {
  writeFileAtomic(path, `${JSON.stringify(r, null, 2)}\n`, 0o644);
}

/**
 * DIR/receipt.json for the issuance at `index`, once covered. Returns the path written, or the
 * command that fetches it later (one line for the operator) when no checkpoint covered it in time.
 */
export async function saveReceiptBeside(
  dir: string,
  o: { server: string; tls: LogServerTls; index: number | undefined; waitMs: number; signal?: AbortSignal | undefined },
): Promise<{ written: string } | { later: string } | undefined> {
  if (o.index === undefined) return undefined;
  const path = join(dir, RECEIPT_FILE);
  const r = o.waitMs > 0 ? await awaitReceipt(new LogClient(o.server, o.tls), o.index, o.waitMs, o.signal) : undefined;
  if (r) {
    writeReceiptFile(path, r);
    return { written: path };
  }
  return { later: `hallmark log receipt --server ${o.server} --index ${o.index} --out ${path}` };
}
