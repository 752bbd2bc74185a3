import type { Logger } from "pino";
import { verifyAuditTail } from "../audit/log.js";
import { AUDIT_GENESIS_HASH } from "../store/sqlite/index.js";
import type { AuditRepository } from "../store/types.js";
import type { Metrics } from "./metrics.js";

/**
 * At start, checks the last `records` records of the audit log and says loudly when the chain is
 * broken: an error line and hallmark_audit_chain_ok 0. The server starts anyway: refusing would
 * hand whoever can edit the database a way to stop all issuance, while the evidence stays in the
 * file for the investigation and new records keep being chained and audited.
 */
export async function checkAuditTail(deps: { audit: AuditRepository; records: number; metrics: Metrics; log: Logger }): Promise<void> {
  if (deps.records === 0) return;
  const v = await verifyAuditTail(deps.audit, AUDIT_GENESIS_HASH, deps.records);
  deps.metrics.auditChainChecked(v.ok, v.records);
  if (v.ok) {
    deps.log.info({ checkedRecords: v.records }, "audit log tail intact");
    return;
  }
  deps.log.error(
    { code: "audit_chain_broken", brokenAt: v.brokenAt, reason: v.reason, checkedRecords: v.records },
    `AUDIT LOG CHAIN BROKEN at record ${v.brokenAt} (${v.reason}): the audit log was changed outside Hallmark. Keep a copy of the database for investigation and run 'hallmark audit verify --offline' on it`,
  );
}
