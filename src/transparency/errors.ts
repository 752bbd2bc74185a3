import { errorFactory, type ErrorTable } from "../errors.js";

/** Codes of the transparency log: Merkle proofs, tiles, signed notes and checkpoints. */
export const TRANSPARENCY_ERRORS = {
  // Requests for proofs and tiles: sizes and indexes the tree does not have (the caller's fault).
  tlog_out_of_range: { status: 400, title: "A log index or tree size is out of range" },
  tlog_malformed_proof: { status: 400, title: "A Merkle proof is malformed" },
  // Verification failures: the evidence was well formed but does not prove what it claims.
  tlog_proof_invalid: { status: 400, title: "A Merkle proof does not verify" },
  tlog_tile_invalid: { status: 400, title: "A log tile or entry bundle is malformed" },
  // Signed notes (C2SP signed-note) and checkpoints (C2SP tlog-checkpoint).
  tlog_note_malformed: { status: 400, title: "A signed note is malformed" },
  tlog_note_unverified: { status: 400, title: "A signed note carries no valid signature from a trusted key" },
  tlog_checkpoint_malformed: { status: 400, title: "A checkpoint is malformed" },
  tlog_key_invalid: { status: 400, title: "A note signer or verifier key is invalid" },
  // The stored tree lacks a hash it should hold: a store fault, never the caller's.
  tlog_hash_missing: { status: 500, title: "A stored Merkle tree hash is missing" },
  // The log inside the server (issue 12, phase 2).
  // A proof, tile or receipt asked for leaves or a size the last signed checkpoint does not cover yet.
  tlog_not_covered: { status: 404, title: "No signed checkpoint covers this yet" },
  // The stored records or tree do not extend the last signed checkpoint (records removed or
  // edited under the server): it refuses to start, and never signs such a tree.
  tlog_tree_diverged: { status: 500, title: "The stored tree does not extend the last signed checkpoint" },
  // The log's signing key is not in the HSM although checkpoints were signed with it.
  tlog_key_missing: { status: 500, title: "The transparency log's key is missing from the HSM" },
} as const satisfies ErrorTable;

export const tlogError = errorFactory(TRANSPARENCY_ERRORS);
