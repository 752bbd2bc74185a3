import { rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { RECEIPT_FILE, saveReceiptBeside } from "../client/receipt-files.js";

/** Long enough for several checkpoints at the default interval (10 s); the agent does not wait on it. */
const NODE_RECEIPT_WAIT_MS = 60_000;

/**
 * Keeps DIR/receipt.json beside the node SVID (README, Transparency log): the receipt of the
 * issuance that produced the SVID now in DIR, fetched in the background once a checkpoint covers
 * it. The old SVID's receipt is removed at once, so the file never describes another SVID.
 */
export function keepNodeReceipt(o: { dataDir: string; server: string; trustBundlePem: string; serverId?: string | undefined; log: Logger }, index: number | undefined): void {
  rmSync(join(o.dataDir, RECEIPT_FILE), { force: true });
  if (index === undefined) return;
  saveReceiptBeside(o.dataDir, { server: o.server, tls: { trustBundlePem: o.trustBundlePem, serverId: o.serverId }, index, waitMs: NODE_RECEIPT_WAIT_MS }).then(
    (saved) => {
      if (saved && "written" in saved) o.log.info({ logIndex: index }, "agent: node SVID receipt written");
      else o.log.warn({ logIndex: index }, "agent: no checkpoint covered the node SVID's log index in time; no receipt kept");
    },
    (e: unknown) => o.log.warn({ logIndex: index, err: (e as Error).message }, "agent: the node SVID's receipt could not be fetched"),
  );
}
