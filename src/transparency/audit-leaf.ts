import { auditRecordBody, canonicalJson } from "../audit/log.js";
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
  return Buffer.from(`${AUDIT_LEAF_VERSION}\n${canonicalJson(auditRecordBody(record))}`, "utf8");
}

export function auditLeafHash(record: AuditRecord): Buffer {
  return leafHash(auditLeafEntry(record));
}
