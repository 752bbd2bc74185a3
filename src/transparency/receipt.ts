import { tlogError } from "./errors.js";
import { leafHash, verifyInclusion } from "./merkle.js";
import { decodeStrictBase64 } from "./note.js";
import { type TrustPolicy, type TrustedCheckpoint, openTrustedCheckpoint } from "./trust-policy.js";

/**
 * A receipt: leaf `index` with its entry, an inclusion proof and the signed checkpoint it leads
 * to. Two spellings of the same thing: receipt.json (GET /v1/log/receipt/<index>) and the C2SP
 * tlog-proof text (c2sp.org/tlog-proof@v1, the entry as its `extra` line).
 */
export interface ReceiptParts {
  index: number;
  entry: Buffer;
  inclusion: Buffer[];
  checkpoint: string;
}

export const TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1";
const DECIMAL = /^(0|[1-9][0-9]{0,15})$/;

const malformed = (why: string) => tlogError("tlog_receipt_malformed", why);

export function formatTlogProof(r: ReceiptParts): string {
  return [TLOG_PROOF_HEADER, `extra ${r.entry.toString("base64")}`, `index ${r.index}`, ...r.inclusion.map((h) => h.toString("base64")), "", r.checkpoint].join("\n");
}

function decimal(s: string | undefined, what: string): number {
  if (s === undefined || !DECIMAL.test(s) || !Number.isSafeInteger(Number(s))) throw malformed(`${what} is not a decimal number`);
  return Number(s);
}

function hash(s: string, what: string): Buffer {
  const h = decodeStrictBase64(s);
  if (!h || h.length !== 32) throw malformed(`${what} is not base64 of 32 bytes`);
  return h;
}

/** Parses tlog-proof text strictly; a receipt without the `extra` line has no entry to check. */
export function parseTlogProof(text: string): ReceiptParts {
  const lines = text.split("\n");
  if (lines[0] !== TLOG_PROOF_HEADER) throw malformed(`a tlog-proof starts with ${TLOG_PROOF_HEADER}`);
  if (!lines[1]?.startsWith("extra ")) throw malformed("the tlog-proof has no extra line: Hallmark's receipts carry the leaf's entry there");
  const entry = decodeStrictBase64(lines[1].slice("extra ".length));
  if (!entry) throw malformed("the extra line is not canonical base64");
  if (!lines[2]?.startsWith("index ")) throw malformed("the tlog-proof's third line is 'index N'");
  const index = decimal(lines[2].slice("index ".length), "the index");
  const blank = lines.indexOf("", 3);
  if (blank < 0) throw malformed("the tlog-proof has no blank line before its checkpoint");
  const inclusion = lines.slice(3, blank).map((l, i) => hash(l, `inclusion proof line ${i + 1}`));
  return { index, entry, inclusion, checkpoint: lines.slice(blank + 1).join("\n") };
}

/**
 * A receipt file: JSON (receipt.json) or tlog-proof text. In JSON every member is checked against
 * the `tlog_proof` member when present, so no member can be edited apart from the others.
 */
export function parseReceipt(content: string): ReceiptParts {
  if (content.startsWith(TLOG_PROOF_HEADER)) return parseTlogProof(content);
  let json: unknown;
  try {
    json = JSON.parse(content);
  } catch {
    throw malformed(`a receipt is JSON (receipt.json) or tlog-proof text starting ${TLOG_PROOF_HEADER}`);
  }
  const j = json as Record<string, unknown>;
  if (typeof j !== "object" || j === null) throw malformed("a receipt is a JSON object");
  if (!Number.isSafeInteger(j.index) || (j.index as number) < 0) throw malformed("index is a non-negative integer");
  if (typeof j.entry !== "string" || !decodeStrictBase64(j.entry)) throw malformed("entry is canonical base64");
  if (!Array.isArray(j.inclusion_proof) || j.inclusion_proof.some((h) => typeof h !== "string")) throw malformed("inclusion_proof is a list of base64 hashes");
  if (typeof j.checkpoint !== "string") throw malformed("checkpoint is the signed checkpoint text");
  const parts: ReceiptParts = {
    index: j.index as number,
    entry: decodeStrictBase64(j.entry)!,
    inclusion: (j.inclusion_proof as string[]).map((h, i) => hash(h, `inclusion_proof[${i}]`)),
    checkpoint: j.checkpoint,
  };
  if (j.tree_size !== undefined && !Number.isSafeInteger(j.tree_size)) throw malformed("tree_size is an integer");
  if (j.tlog_proof !== undefined) {
    if (typeof j.tlog_proof !== "string" || formatTlogProof(parts) !== j.tlog_proof) throw malformed("the receipt's members and its tlog_proof disagree");
  }
  return Object.assign(parts, { treeSize: j.tree_size as number | undefined });
}

export interface VerifiedReceipt extends TrustedCheckpoint {
  index: number;
  entry: Buffer;
}

/**
 * Verifies a receipt offline (c2sp.org/tlog-proof, "Verifying"): the checkpoint under the trust
 * policy, then the inclusion proof of SHA-256(0x00 ‖ entry) at `index` to its root. A JSON
 * receipt's tree_size must be the checkpoint's.
 */
export function verifyReceipt(r: ReceiptParts & { treeSize?: number | undefined }, policy: TrustPolicy): VerifiedReceipt {
  const trusted = openTrustedCheckpoint(r.checkpoint, policy);
  const { treeSize, rootHash } = trusted.checkpoint;
  if (r.treeSize !== undefined && r.treeSize !== treeSize) throw malformed(`tree_size ${r.treeSize} is not the checkpoint's size ${treeSize}`);
  verifyInclusion(r.index, treeSize, leafHash(r.entry), r.inclusion, rootHash);
  return { ...trusted, index: r.index, entry: r.entry };
}
