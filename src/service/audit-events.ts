/** Audit event names, one place. */
export const AUDIT_EVENTS = {
  attest: "attest",
  renewNode: "renew_node",
  authenticateNode: "authenticate_node",
  issueX509: "issue_x509",
  issueJwt: "issue_jwt",
  /** A WIT-SVID for a workload (its `serial` is the token's jti). */
  issueWit: "issue_wit",
  tokenCreate: "token_create",
  entryCreate: "entry_create",
  entryDelete: "entry_delete",
  nodeEvict: "node_evict",
  nodeBan: "node_ban",
  nodeUnban: "node_unban",
  caRotate: "ca_rotate",
  /** The server's own X509-SVID for its HTTPS listener (at start, at half-life, when the bundle changes). */
  issueServerSvid: "issue_server_svid",
  /** A CA key step the server took on its own: the first keys at start, scheduled rotation. */
  caKeyChange: "ca_key_change",
  /** Requests refused by the anonymous rate limit, counted per address and window (src/service/rate-limit.ts). */
  rateLimitedSummary: "rate_limited_summary",
  backup: "backup",
  /** Who may act for whom (issue 11): a delegation created or deleted by the administrator. */
  delegationCreate: "delegation_create",
  delegationDelete: "delegation_delete",
  /** An OAuth access token issued by token exchange (its `serial` is the jti). */
  issueAccessToken: "issue_access_token",
  /** An introspection (RFC 7662) answered or refused: the token's digest and jti, never the token. */
  oauthIntrospect: "oauth_introspect",
  /** A revocation (RFC 7009) done or refused, with the descendants it reached. */
  oauthRevoke: "oauth_revoke",
  /** Federation (issue 14): a relationship with a foreign trust domain created, changed or deleted by the administrator. */
  federationCreate: "federation_create",
  federationUpdate: "federation_update",
  federationDelete: "federation_delete",
  /** A foreign bundle adopted (success) or a fetched one refused (refused, with the code; the last good bundle stays). */
  federationBundle: "federation_bundle",
} as const;
