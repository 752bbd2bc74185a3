/** Audit event names, one place. */
export const AUDIT_EVENTS = {
  attest: "attest",
  renewNode: "renew_node",
  authenticateNode: "authenticate_node",
  issueX509: "issue_x509",
  issueJwt: "issue_jwt",
  tokenCreate: "token_create",
  entryCreate: "entry_create",
  entryDelete: "entry_delete",
  nodeEvict: "node_evict",
  nodeBan: "node_ban",
  nodeUnban: "node_unban",
  caRotate: "ca_rotate",
  backup: "backup",
} as const;
