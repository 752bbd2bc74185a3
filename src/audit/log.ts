import { createHash } from "node:crypto";
import { HallmarkError, isHallmarkError } from "../errors.js";
import type { AuditAppend, AuditHasher, AuditRecord, AuditRecordInput, AuditRepository, IssuedSvidRecord } from "../store/types.js";

/** How appends are grouped into transactions (config audit.groupCommit). */
export interface GroupCommitOptions {
  /** The most records one transaction commits. */
  maxBatch: number;
  /**
   * How long the first append of a batch waits for others before its transaction starts: 0 waits
   * only for the appends made in the same turn of the event loop (setImmediate).
   */
  maxDelayMs: number;
  /** Told the size of every committed transaction (the batch-size histogram on /metrics). */
  onCommit?: ((records: number) => void) | undefined;
}

export const GROUP_COMMIT_DEFAULTS: GroupCommitOptions = { maxBatch: 256, maxDelayMs: 0 };

interface PendingAppend {
  item: AuditAppend;
  resolve(record: AuditRecord): void;
  reject(e: unknown): void;
}

/** A record this process committed, with the canonical JSON its hash covers (the transparency log's leaf is made of it). */
export interface CommittedAuditRecord {
  seq: number;
  /** Its chain hash (of `canonical`). */
  hash: string;
  canonical: string;
}

/**
 * The chain hasher of one transaction (auditRecordHash of each record in its place), keeping each
 * canonical JSON it hashed, by hash: a transaction's records are told
 * to listeners with it, so the integrator need not read them back and serialise them again.
 * Keyed by hash, not seq, so that a retried transaction's records are matched exactly.
 */
function keepingCanonical(): { hasher: AuditHasher; of(records: readonly AuditRecord[]): CommittedAuditRecord[] } {
  const byHash = new Map<string, string>();
  return {
    hasher: (input, prevHash, seq) => {
      const canonical = auditRecordCanonical({ ...input, seq, prevHash });
      const hash = auditHashOf(canonical);
      byHash.set(hash, canonical);
      return hash;
    },
    of: (records) => records.map((r) => ({ seq: r.seq, hash: r.hash, canonical: byHash.get(r.hash) ?? auditRecordCanonical(r) })),
  };
}

/** The datastore itself failed (not this record): trying the records one at a time would fail each the same way. */
const isStoreFailure = (e: unknown) => isHallmarkError(e) && e.code === "store_unavailable";

/**
 * The issuance log: one record per issuance and per refusal, each chained to the one before by
 * SHA-256, so that a deleted, reordered or edited record breaks the chain (`hallmark audit verify`).
 *
 *   hash_n = SHA-256( canonicalJson({ seq, prevHash, time, event, outcome, code, actor,
 *                                     spiffeId, attestor, serial, details }) )
 *
 * Appends are group-committed: those made while a batch waits for its window or commits go into
 * one transaction together (the head read and the pages each commit writes are shared), in call
 * order. Each caller's promise still settles only once the transaction holding its record did.
 */
export class AuditLog {
  private readonly listeners: Array<(committed: readonly CommittedAuditRecord[]) => void> = [];
  private readonly options: GroupCommitOptions;
  private queue: PendingAppend[] = [];
  private window: { cancel(): void } | undefined;
  private committing = false;
  private readonly idleWaiters: Array<() => void> = [];
  private closed = false;

  constructor(
    private readonly repo: AuditRepository,
    options: Partial<GroupCommitOptions> = {},
  ) {
    this.options = { ...GROUP_COMMIT_DEFAULTS, ...options };
  }

  /**
   * With `svid` (an issuance's success record), the SVID's record is committed with the audit
   * record in one transaction: both are durable before the caller hands the SVID out, or neither is.
   */
  append(input: AuditRecordInput, svid?: IssuedSvidRecord): Promise<AuditRecord> {
    if (this.closed) return Promise.reject(new HallmarkError("unavailable", "the audit log is closed: the server is shutting down"));
    return new Promise((resolve, reject) => {
      this.queue.push({ item: { input, svid }, resolve, reject });
      this.schedule();
    });
  }

  /** Called once per transaction committed by this process (a batch of appends), with its records in seq order. */
  onAppend(listener: (committed: readonly CommittedAuditRecord[]) => void): void {
    this.listeners.push(listener);
  }

  /**
   * Commits the appends already accepted, then refuses new ones (`unavailable`). Close it before
   * the store, after everything that appends (the server's closers run in reverse order).
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.window) {
      this.window.cancel();
      this.window = undefined;
      void this.drain();
    }
    if (this.committing) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    // A batch committing takes everything queued meanwhile as soon as it ends.
    if (this.committing) return;
    if (this.queue.length >= this.options.maxBatch) {
      this.window?.cancel();
      this.window = undefined;
      void this.drain();
      return;
    }
    if (this.window) return;
    const open = () => {
      this.window = undefined;
      void this.drain();
    };
    if (this.options.maxDelayMs > 0) {
      const t = setTimeout(open, this.options.maxDelayMs);
      this.window = { cancel: () => clearTimeout(t) };
    } else {
      const i = setImmediate(open);
      this.window = { cancel: () => clearImmediate(i) };
    }
  }

  private async drain(): Promise<void> {
    this.committing = true;
    try {
      while (this.queue.length > 0) await this.commit(this.queue.splice(0, this.options.maxBatch));
    } finally {
      // In the same synchronous step as the loop's last look at the queue: no append is left behind.
      this.committing = false;
      for (const idle of this.idleWaiters.splice(0)) idle();
    }
  }

  /** Settles every append of `batch`; never throws. */
  private async commit(batch: PendingAppend[]): Promise<void> {
    let records: AuditRecord[];
    const canonical = keepingCanonical();
    try {
      records = await this.repo.appendBatch(
        batch.map((p) => p.item),
        canonical.hasher,
      );
    } catch (e) {
      if (batch.length === 1 || isStoreFailure(e)) {
        for (const p of batch) p.reject(e);
        return;
      }
      await this.commitOneByOne(batch);
      return;
    }
    this.committed(canonical.of(records));
    batch.forEach((p, i) => p.resolve(records[i]!));
  }

  /**
   * A batch failed because of one of its records (a serial recorded already, a record that
   * cannot be hashed): each is tried alone, in order, so only the faulty one's caller is refused.
   */
  private async commitOneByOne(batch: PendingAppend[]): Promise<void> {
    const committed: CommittedAuditRecord[] = [];
    for (const [i, p] of batch.entries()) {
      try {
        const canonical = keepingCanonical();
        const [record] = await this.repo.appendBatch([p.item], canonical.hasher);
        this.options.onCommit?.(1);
        committed.push(...canonical.of([record!]));
        p.resolve(record!);
      } catch (e) {
        p.reject(e);
        if (!isStoreFailure(e)) continue;
        for (const rest of batch.slice(i + 1)) rest.reject(e);
        break;
      }
    }
    if (committed.length > 0) this.notify(committed);
  }

  private committed(records: CommittedAuditRecord[]): void {
    this.options.onCommit?.(records.length);
    this.notify(records);
  }

  private notify(committed: readonly CommittedAuditRecord[]): void {
    // The transparency log's integrator wakes up on this (it also polls: a record appended by
    // another replica or process is integrated all the same).
    for (const l of this.listeners) l(committed);
  }
}

export function auditRecordHash(r: AuditRecordInput & { seq: number; prevHash: string }): string {
  return auditHashOf(auditRecordCanonical(r));
}

/**
 * The canonical JSON of what a record's hash covers: its chain hash and its transparency-log leaf
 * are both made of it. canonicalJson(auditRecordBody(r)), written out: the body's keys are fixed,
 * so they are spelled in sorted order here rather than sorted per record (on every issuance's
 * path; test/audit/canonical.test.ts holds the two spellings equal).
 */
export function auditRecordCanonical(r: AuditRecordInput & { seq: number; prevHash: string }): string {
  const text = (v: string | undefined) => (v === undefined ? "null" : JSON.stringify(v));
  return (
    `{"actor":${text(r.actor)},"attestor":${text(r.attestor)},"code":${text(r.code)},"details":${canonicalJson(r.details)},` +
    `"event":${JSON.stringify(r.event)},"outcome":${JSON.stringify(r.outcome)},"prevHash":${JSON.stringify(r.prevHash)},"seq":${JSON.stringify(r.seq)},` +
    `"serial":${text(r.serial)},"spiffeId":${text(r.spiffeId)},"time":${JSON.stringify(r.time.toISOString())}}`
  );
}

/** The chain hash of a record's canonical JSON (auditRecordCanonical). */
export function auditHashOf(canonical: string): string {
  return createHash("sha256").update(canonical).digest("hex");
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
