import { createHash } from "node:crypto";
import type { AuditRecord, AuditRecordInput, AuditRepository, IssuedSvidRecord } from "../store/types.js";

/**
 * The issuance log: one record per issuance and per refusal, each chained to the one before by
 * SHA-256, so that a deleted, reordered or edited record breaks the chain (`hallmark audit verify`).
 *
 *   hash_n = SHA-256( canonicalJson({ seq, prevHash, time, event, outcome, code, actor,
 *                                     spiffeId, attestor, serial, details }) )
 */
export class AuditLog {
  private readonly listeners: Array<() => void> = [];

  constructor(private readonly repo: AuditRepository) {}

  /**
   * With `svid` (an issuance's success record), the SVID's record is committed with the audit
   * record in one transaction: both are durable before the caller hands the SVID out, or neither is.
   */
  async append(input: AuditRecordInput, svid?: IssuedSvidRecord): Promise<AuditRecord> {
    const record = await this.repo.append(input, (prevHash, seq) => auditRecordHash({ ...input, seq, prevHash }), svid);
    // The transparency log's integrator wakes up on this (it also polls: a record appended by
    // another replica or process is integrated all the same).
    for (const l of this.listeners) l();
    return record;
  }

  /** Called after every append committed by this process. */
  onAppend(listener: () => void): void {
    this.listeners.push(listener);
  }
}

export function auditRecordHash(r: AuditRecordInput & { seq: number; prevHash: string }): string {
  return createHash("sha256").update(canonicalJson(auditRecordBody(r))).digest("hex");
}

/**
 * Exactly what a record's hash covers, in one place: the chain hashes its canonical JSON, and the
 * transparency log's leaf (src/transparency/audit-leaf.ts) holds the same JSON, timestamp inside.
 */
export function auditRecordBody(r: AuditRecordInput & { seq: number; prevHash: string }): Record<string, unknown> {
  return {
    seq: r.seq,
    prevHash: r.prevHash,
    time: r.time.toISOString(),
    event: r.event,
    outcome: r.outcome,
    code: r.code ?? null,
    actor: r.actor ?? null,
    spiffeId: r.spiffeId ?? null,
    attestor: r.attestor ?? null,
    serial: r.serial ?? null,
    details: r.details,
  };
}

/** JSON with object keys sorted at every depth: the same record always hashes the same. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

/** A record's position and hash, kept outside the database, so that a cut-off tail is noticed. */
export interface AuditCheckpoint {
  seq: number;
  hash: string;
}

export type AuditVerification =
  | {
      ok: true;
      records: number;
      head: string;
      /** The transparency log recomputed from the records (stored-chain.ts): its size and the last checkpoint's. */
      tree?: { size: number; checkpointSize: number | null } | undefined;
    }
  | {
      ok: false;
      records: number;
      brokenAt: number;
      /** tree_mismatch: the chain holds, but a leaf or the signed root differs from the recomputed tree. */
      reason: "sequence_gap" | "prev_hash_mismatch" | "hash_mismatch" | "checkpoint_missing" | "checkpoint_mismatch" | "tree_mismatch";
    };

/**
 * Walks the whole chain from the genesis record. A chain only proves what is still in it: records
 * deleted from the end leave a shorter, intact chain. A checkpoint taken earlier (the head printed
 * by a previous verification) closes that gap: its record must still be there with the same hash.
 */
export async function verifyAuditChain(repo: AuditRepository, genesisHash: string, checkpoint?: AuditCheckpoint): Promise<AuditVerification> {
  let expectedSeq = 1;
  let prevHash = genesisHash;
  let count = 0;
  const page = 1000;
  for (;;) {
    const batch = await repo.list(expectedSeq - 1, page);
    for (const r of batch) {
      const reason = linkFault(r, expectedSeq, prevHash);
      if (reason) return { ok: false, records: count, brokenAt: reason === "sequence_gap" ? expectedSeq : r.seq, reason };
      if (checkpoint && r.seq === checkpoint.seq && r.hash !== checkpoint.hash) {
        return { ok: false, records: count, brokenAt: r.seq, reason: "checkpoint_mismatch" };
      }
      prevHash = r.hash;
      expectedSeq += 1;
      count += 1;
    }
    if (batch.length < page) {
      if (checkpoint && count < checkpoint.seq) return { ok: false, records: count, brokenAt: count + 1, reason: "checkpoint_missing" };
      return { ok: true, records: count, head: prevHash };
    }
  }
}

/**
 * Checks only the last `limit` records, cheaply enough for every server start: each stored hash
 * against its recomputation, and each link to the record before it within the tail (the first
 * one's link too when the tail reaches back to the genesis record). `records` counts those checked.
 */
export async function verifyAuditTail(repo: AuditRepository, genesisHash: string, limit: number): Promise<AuditVerification> {
  const tail = await repo.tail(limit);
  const first = tail[0];
  if (!first) return { ok: true, records: 0, head: genesisHash };
  let expectedSeq = first.seq;
  // The record before the tail is not read: the first record's own prev_hash is taken as given.
  let prevHash = first.seq === 1 ? genesisHash : first.prevHash;
  let count = 0;
  for (const r of tail) {
    const reason = linkFault(r, expectedSeq, prevHash);
    if (reason) return { ok: false, records: count, brokenAt: reason === "sequence_gap" ? expectedSeq : r.seq, reason };
    prevHash = r.hash;
    expectedSeq += 1;
    count += 1;
  }
  return { ok: true, records: count, head: prevHash };
}

/** What is wrong with record `r`, expected at `expectedSeq` after the record hashed `prevHash`. */
function linkFault(r: AuditRecord, expectedSeq: number, prevHash: string): "sequence_gap" | "prev_hash_mismatch" | "hash_mismatch" | undefined {
  if (r.seq !== expectedSeq) return "sequence_gap";
  if (r.prevHash !== prevHash) return "prev_hash_mismatch";
  if (auditRecordHash(r) !== r.hash) return "hash_mismatch";
  return undefined;
}
