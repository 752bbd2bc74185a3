import { rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { LogClient } from "../client/log-client.js";
import { ServerList, type ServerTarget } from "../client/server-list.js";
import { RECEIPT_FILE, awaitReceipt, writeReceiptFile } from "../client/receipt-files.js";

/** Long enough for many checkpoints at the default interval (1 s), and for a slow log; the agent does not wait on it. */
const NODE_RECEIPT_WAIT_MS = 60_000;

/** The latest issuance per data directory: an older wait that ends late writes nothing. */
const latest = new Map<string, number>();

/**
 * Keeps DIR/receipt.json beside the node SVID (README, Transparency log): the receipt of the
 * issuance that produced the SVID now in DIR, fetched in the background once a checkpoint covers
 * it. The old SVID's receipt is removed at once, so the file never describes another SVID.
 */
export function keepNodeReceipt(
  o: { dataDir: string; server: ServerTarget; trustBundlePem: string; serverId?: string | undefined; log: Logger },
  index: number | undefined,
  /** The agent stopping: the wait ends (the process must not linger for a receipt). */
  signal: AbortSignal,
): void {
  const generation = (latest.get(o.dataDir) ?? 0) + 1;
  latest.set(o.dataDir, generation);
  rmSync(join(o.dataDir, RECEIPT_FILE), { force: true });
  if (index === undefined) return;
  // Replicas share one log: the one that answered last serves the receipt.
  const log = new LogClient(ServerList.from(o.server).lastAnswered().origin, { trustBundlePem: o.trustBundlePem, serverId: o.serverId });
  awaitReceipt(log, index, NODE_RECEIPT_WAIT_MS, signal).then(
    (r) => {
      if (latest.get(o.dataDir) !== generation || signal.aborted) return;
      if (!r) return o.log.warn({ logIndex: index }, "agent: no checkpoint covered the node SVID's log index in time; no receipt kept");
      writeReceiptFile(join(o.dataDir, RECEIPT_FILE), r);
      o.log.info({ logIndex: index }, "agent: node SVID receipt written");
    },
    (e: unknown) => o.log.warn({ logIndex: index, err: (e as Error).message }, "agent: the node SVID's receipt could not be fetched"),
  );
}
