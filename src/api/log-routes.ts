import type { FastifyInstance, FastifyReply } from "fastify";
import { z } from "zod";
import type { TransparencyReader } from "../transparency/log-reader.js";
import { parseTilePath } from "../transparency/tiles.js";
import { defineRoute, registerRoute } from "./route-spec.js";

/**
 * The transparency log's read API (README, Transparency log): unauthenticated, bounded by the
 * last signed checkpoint. The C2SP tlog-tiles layout under /log (what transparency-log clients
 * and witnesses read), and JSON proofs and receipts under /v1/log for simple clients.
 */
export interface LogRouteDeps {
  transparency: TransparencyReader;
}

/** A decimal index or size, no leading zeros, at most 2^53 − 1: anything else is invalid_request. */
const decimal = (what: string) =>
  z
    .string()
    .regex(/^(0|[1-9][0-9]{0,15})$/, `${what} is a non-negative decimal integer`)
    .transform(Number)
    .refine(Number.isSafeInteger, `${what} is at most 2^53 - 1`)
    .describe(what);
const hashes = z.array(z.base64()).describe("base64 SHA-256 hashes, RFC 9162 order");
const TEXT = "text/plain; charset=utf-8";
/** Full tiles never change; partial tiles and the checkpoint move on with the next checkpoint. */
const IMMUTABLE = "public, max-age=31536000, immutable";
const SHORT = "public, max-age=5";

export const LOG_ROUTES = {
  checkpoint: defineRoute({
    operationId: "logCheckpoint",
    method: "GET",
    url: "/log/checkpoint",
    summary: "The last signed checkpoint (C2SP tlog-checkpoint, a C2SP signed-note)",
    caller: "anyone",
    responses: { 200: { description: "The signed note", body: z.string(), contentType: TEXT } },
    errors: ["tlog_not_covered"],
  }),
  key: defineRoute({
    operationId: "logKey",
    method: "GET",
    url: "/log/key",
    summary: "The log's verifier key: <origin>+<key id>+<base64 key>, as Go's sumdb/note reads it",
    caller: "anyone",
    responses: { 200: { description: "The verifier key, one line", body: z.string(), contentType: TEXT } },
  }),
  tile: defineRoute({
    operationId: "logTile",
    method: "GET",
    url: "/log/tile/*",
    summary: "A hash tile (tile/<L>/<N>[.p/<W>]) or an entry bundle (tile/entries/<N>[.p/<W>]), C2SP tlog-tiles",
    description:
      "Only tiles of the last signed checkpoint's tree. Full tiles are immutable; partial ones change with the next checkpoint. " +
      "Entries are the audit records' leaves: `hallmark-audit/v1` and a newline, then the record's canonical JSON.",
    caller: "anyone",
    responses: { 200: { description: "The tile's bytes", body: z.string(), contentType: "application/octet-stream" } },
    errors: ["tlog_tile_invalid", "tlog_not_covered"],
  }),
  inclusion: defineRoute({
    operationId: "logInclusionProof",
    method: "GET",
    url: "/v1/log/proof/inclusion",
    summary: "An inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3)",
    caller: "anyone",
    query: z.object({ index: decimal("the leaf index (a log_index)"), size: decimal("a signed tree size") }).strict(),
    responses: { 200: { description: "The proof", body: z.object({ index: z.number().int(), tree_size: z.number().int(), hashes }) } },
    errors: ["tlog_out_of_range", "tlog_not_covered"],
  }),
  consistency: defineRoute({
    operationId: "logConsistencyProof",
    method: "GET",
    url: "/v1/log/proof/consistency",
    summary: "A consistency proof between two tree sizes (RFC 9162 §2.1.4)",
    caller: "anyone",
    query: z.object({ first: decimal("the older tree size"), second: decimal("the newer tree size") }).strict(),
    responses: { 200: { description: "The proof", body: z.object({ first: z.number().int(), second: z.number().int(), hashes }) } },
    errors: ["tlog_out_of_range", "tlog_not_covered"],
  }),
  receipt: defineRoute({
    operationId: "logReceipt",
    method: "GET",
    url: "/v1/log/receipt/:index",
    summary: "An offline-verifiable receipt of leaf `index` (a log_index), once a checkpoint covers it",
    description:
      "`tlog_proof` is the C2SP tlog-proof text (c2sp.org/tlog-proof@v1) with the leaf's entry as its `extra` line; " +
      "the other members say the same in JSON. Verify: leaf hash SHA-256(0x00 ‖ entry), the inclusion proof to the checkpoint's root, the checkpoint's signature with GET /log/key.",
    caller: "anyone",
    params: z.object({ index: decimal("the leaf index (a log_index)") }).strict(),
    responses: {
      200: {
        description: "The receipt",
        body: z.object({
          index: z.number().int(),
          tree_size: z.number().int(),
          entry: z.base64().describe("the leaf's entry bytes"),
          inclusion_proof: hashes,
          checkpoint: z.string().describe("the signed checkpoint the proof leads to"),
          tlog_proof: z.string(),
        }),
      },
    },
    errors: ["tlog_not_covered"],
  }),
};

const b64 = (hs: readonly Buffer[]) => hs.map((h) => h.toString("base64"));

export async function logRoutes(app: FastifyInstance, deps: LogRouteDeps): Promise<void> {
  const R = LOG_ROUTES;
  const log = deps.transparency;
  const text = (reply: FastifyReply, body: string, cache: string) => reply.header("cache-control", cache).type(TEXT).send(body);
  registerRoute(app, R.checkpoint, async (_in, _c, _req, reply) => text(reply, (await log.checkpoint()).text, "no-cache"));
  registerRoute(app, R.key, async (_in, _c, _req, reply) => text(reply, `${log.key.verifierKey}\n`, SHORT));
  registerRoute(app, R.tile, async (_in, _c, req, reply) => {
    const rest = (req.params as Record<string, string | undefined>)["*"] ?? "";
    const tile = await log.tile(parseTilePath(`tile/${rest}`));
    return reply.header("cache-control", tile.full ? IMMUTABLE : SHORT).type("application/octet-stream").send(tile.data);
  });
  registerRoute(app, R.inclusion, async ({ query }) => ({
    index: query.index,
    tree_size: query.size,
    hashes: b64(await log.inclusion(query.index, query.size)),
  }));
  registerRoute(app, R.consistency, async ({ query }) => ({
    first: query.first,
    second: query.second,
    hashes: b64(await log.consistency(query.first, query.second)),
  }));
  registerRoute(app, R.receipt, async ({ params }) => {
    const r = await log.receipt(params.index);
    return {
      index: r.index,
      tree_size: r.treeSize,
      entry: r.entry.toString("base64"),
      inclusion_proof: b64(r.inclusion),
      checkpoint: r.checkpoint,
      tlog_proof: r.tlogProof,
    };
  });
}
