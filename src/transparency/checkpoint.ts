import { tlogError } from "./errors.js";
import { HASH_SIZE } from "./merkle.js";
import { type NoteSigner, type NoteVerifier, type OpenedNote, decodeStrictBase64, openNote, signNote } from "./note.js";

/**
 * C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint): the note text of a signed tree head. Origin,
 * decimal tree size, base64 root hash, then optional non-empty extension lines, each ending in a
 * newline.
 */

export interface Checkpoint {
  origin: string;
  treeSize: number;
  rootHash: Buffer;
  /** Opaque extension lines (the spec recommends none; we write none). */
  extensions: string[];
}

const SIZE = /^(0|[1-9][0-9]*)$/;
/** Bounds for parsing: the note itself is bounded too (note.ts). */
const MAX_EXTENSIONS = 16;

/** The note text of a checkpoint. */
export function formatCheckpoint(cp: Checkpoint): string {
  if (cp.origin.length === 0 || cp.origin.includes("\n")) throw tlogError("tlog_checkpoint_malformed", "the origin is one non-empty line");
  if (!Number.isSafeInteger(cp.treeSize) || cp.treeSize < 0) throw tlogError("tlog_checkpoint_malformed", "the tree size is a non-negative integer");
  if (cp.rootHash.length !== HASH_SIZE) throw tlogError("tlog_checkpoint_malformed", `the root hash is ${HASH_SIZE} bytes`);
  for (const e of cp.extensions) {
    if (e.length === 0 || e.includes("\n")) throw tlogError("tlog_checkpoint_malformed", "an extension is one non-empty line");
  }
  return [cp.origin, String(cp.treeSize), cp.rootHash.toString("base64"), ...cp.extensions].map((l) => `${l}\n`).join("");
}

/** Parses a checkpoint's note text strictly (one canonical spelling of each number and hash). */
export function parseCheckpoint(text: string): Checkpoint {
  if (!text.endsWith("\n")) throw tlogError("tlog_checkpoint_malformed", "a checkpoint ends with a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) throw tlogError("tlog_checkpoint_malformed", "a checkpoint has an origin, a tree size and a root hash");
  if (lines.length > 3 + MAX_EXTENSIONS) throw tlogError("tlog_checkpoint_malformed", `a checkpoint has at most ${MAX_EXTENSIONS} extension lines`);
  const [origin, size, root, ...extensions] = lines as [string, string, string, ...string[]];
  if (origin.length === 0) throw tlogError("tlog_checkpoint_malformed", "the origin is empty");
  if (!SIZE.test(size) || !Number.isSafeInteger(Number(size))) throw tlogError("tlog_checkpoint_malformed", "the tree size is not a decimal number without leading zeros");
  const rootHash = decodeStrictBase64(root);
  if (!rootHash || rootHash.length !== HASH_SIZE) throw tlogError("tlog_checkpoint_malformed", "the root hash is not canonical base64 of 32 bytes");
  if (extensions.some((e) => e.length === 0)) throw tlogError("tlog_checkpoint_malformed", "an extension line is empty");
  return { origin, treeSize: Number(size), rootHash, extensions };
}

/**
 * Signs a checkpoint with the log's key (whose name is the origin, as the contract says) and any
 * further signers, e.g. a second log key during a rotation.
 */
export async function signCheckpoint(cp: Checkpoint, logSigner: NoteSigner, others: readonly NoteSigner[] = []): Promise<string> {
  if (logSigner.name !== cp.origin) throw tlogError("tlog_key_invalid", "the log key's name is the checkpoint's origin");
  return signNote(formatCheckpoint(cp), [logSigner, ...others]);
}

export interface OpenedCheckpoint {
  checkpoint: Checkpoint;
  note: OpenedNote;
}

/**
 * Verifies a signed checkpoint against the log's key: the log's own signature must be among the
 * verified ones (a witness cosignature alone is not enough), and the origin must be the key name.
 * Other trusted keys (witnesses) may be passed; their signatures are verified, and listed.
 */
export function openCheckpoint(signed: string | Uint8Array, logKey: NoteVerifier, others: readonly NoteVerifier[] = []): OpenedCheckpoint {
  const note = openNote(signed, [logKey, ...others]);
  if (!note.verified.some((s) => s.name === logKey.name && s.keyId === logKey.keyId)) {
    throw tlogError("tlog_note_unverified", "the checkpoint is not signed by the log's key");
  }
  const checkpoint = parseCheckpoint(note.text);
  if (checkpoint.origin !== logKey.name) throw tlogError("tlog_checkpoint_malformed", "the checkpoint's origin is not the log key's name");
  return { checkpoint, note };
}
