import { auditHashOf, auditRecordCanonical } from "../audit/log.js";
import type { AuditRecord } from "../store/types.js";
import { leafHash } from "./merkle.js";

/**
 * The leaf of an audit record: a version line, then the canonical JSON its chain hash covers
 * (src/audit/log.ts auditRecordBody), timestamp inside, so that the time of a decision is as
 * tamper-evident as the decision (a time kept outside the leaf, like Rekor v1's integratedTime,
 * could change unseen). Existing records need no migration: their leaves are computed from them.
 * Leaf index = seq − 1.
 */
export const AUDIT_LEAF_VERSION = "hallmark-audit/v1";

export function auditLeafEntry(record: AuditRecord): Buffer {
  return leafEntryOf(auditRecordCanonical(record));
}

export function auditLeafHash(record: AuditRecord): Buffer {
  return leafHash(auditLeafEntry(record));
}

/**
 * The leaf hash of a record that still matches its chain hash, or undefined for one edited since
 * it was chained: both checks from one canonical JSON (integration makes a leaf of every record,
 * so this is on the issuance path's heels).
 */
export function checkedAuditLeafHash(record: AuditRecord): Buffer | undefined {
  const canonical = auditRecordCanonical(record);
  return auditHashOf(canonical) === record.hash ? auditLeafHashOf(canonical) : undefined;
}

/** The leaf hash of a record from the canonical JSON its chain hash was made of (src/audit/log.ts auditRecordCanonical). */
export function auditLeafHashOf(canonical: string): Buffer {
  return leafHash(leafEntryOf(canonical));
}

function leafEntryOf(canonical: string): Buffer {
  return Buffer.from(`${AUDIT_LEAF_VERSION}\n${canonical}`, "utf8");
}
