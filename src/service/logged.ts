import type { AuditRecord } from "../store/types.js";

/**
 * What an issuance answers besides the credential: the index of its audit record's leaf in the
 * transparency log (seq − 1), so the holder can fetch the receipt once a checkpoint covers it.
 */
export interface Logged {
  logIndex: number;
}

export function logIndexOf(record: AuditRecord): number {
  return record.seq - 1;
}
