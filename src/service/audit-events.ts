/** Audit event names, one place. */
export const AUDIT_EVENTS = {
  attest: "attest",
  renewNode: "renew_node",
  issueX509: "issue_x509",
  issueJwt: "issue_jwt",
  tokenCreate: "token_create",
  entryCreate: "entry_create",
  entryDelete: "entry_delete",
  nodeEvict: "node_evict",
  caRotate: "ca_rotate",
  /** Requests refused by the anonymous rate limit, counted per address and window (src/service/rate-limit.ts). */
  rateLimitedSummary: "rate_limited_summary",
} as const;
