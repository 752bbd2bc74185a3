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
  // Auditors and witnesses (issue 12, phase 3): what the CLI, the monitor and a witness refuse.
  // A checkpoint is not consistent with one seen before (a smaller tree, another root at the same
  // size, or a consistency proof that fails): the log forked or rolled back.
  tlog_checkpoint_inconsistent: { status: 409, title: "A checkpoint is not consistent with the one seen before" },
  // Fewer than the required witnesses cosigned the checkpoint (the "log key plus K of N" policy).
  tlog_witness_quorum: { status: 400, title: "Too few trusted witnesses cosigned the checkpoint" },
  // A receipt file (receipt.json or tlog-proof text) is malformed, or its parts disagree.
  tlog_receipt_malformed: { status: 400, title: "A receipt is malformed" },
  // A valid receipt that is not about the credential it was checked against.
  tlog_receipt_mismatch: { status: 400, title: "The receipt is not about this credential" },
  // The log's entries do not lead to its signed root, or break the audit chain (removed, reordered or edited leaves).
  tlog_entries_invalid: { status: 400, title: "The log's entries do not match its signed checkpoint" },
  // A witness knows no log of this origin (tlog-witness: 404).
  tlog_witness_unknown_log: { status: 404, title: "The witness does not follow this log" },
  // A witness's recorded size is not the old size submitted (tlog-witness: 409, answers its size).
  tlog_witness_size_conflict: { status: 409, title: "The witness has a different tree size for this log" },
  // The monitor's or witness's state file cannot be used.
  tlog_state_invalid: { status: 500, title: "A transparency log state file is unreadable" },
} as const satisfies ErrorTable;

export const tlogError = errorFactory(TRANSPARENCY_ERRORS);
