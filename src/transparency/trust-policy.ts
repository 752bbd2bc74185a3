import { type Checkpoint, openCheckpoint } from "./checkpoint.js";
import { tlogError } from "./errors.js";
import type { NoteSignature, NoteVerifier } from "./note.js";

/**
 * What a verifier trusts (c2sp.org/tlog-proof, "Verifying"): the log's key, plus K of these
 * witness keys. K = 0 trusts the log alone. Witnesses are counted by distinct key, so one
 * witness's signature twice is one witness.
 */
export interface TrustPolicy {
  logKey: NoteVerifier;
  witnesses: readonly NoteVerifier[];
  witnessesNeeded: number;
}

export interface TrustedCheckpoint {
  checkpoint: Checkpoint;
  /** The trusted witnesses whose cosignatures verified. */
  cosigners: NoteSignature[];
}

export function checkPolicyShape(p: TrustPolicy): void {
  if (!Number.isInteger(p.witnessesNeeded) || p.witnessesNeeded < 0 || p.witnessesNeeded > p.witnesses.length) {
    throw tlogError("tlog_key_invalid", `--witnesses-needed ${p.witnessesNeeded} must be between 0 and the ${p.witnesses.length} witness key(s) given`);
  }
}

/**
 * Opens a signed checkpoint under the policy: the log's signature verifies (openCheckpoint), every
 * signature of a known witness verifies, and at least K distinct witnesses cosigned.
 */
export function openTrustedCheckpoint(signed: string | Uint8Array, p: TrustPolicy): TrustedCheckpoint {
  checkPolicyShape(p);
  const { checkpoint, note } = openCheckpoint(signed, p.logKey, p.witnesses);
  const isWitness = (s: NoteSignature) => p.witnesses.some((w) => w.name === s.name && w.keyId === s.keyId);
  const seen = new Set<string>();
  const cosigners = note.verified.filter((s) => {
    const id = `${s.name}+${s.keyId}`;
    if (!isWitness(s) || seen.has(id)) return false;
    seen.add(id);
    return true;
  });
  if (cosigners.length < p.witnessesNeeded) {
    throw tlogError("tlog_witness_quorum", `the checkpoint carries ${cosigners.length} trusted witness cosignature(s), ${p.witnessesNeeded} needed`);
  }
  return { checkpoint, cosigners };
}
