import { errorFactory, type ErrorTable } from "../errors.js";

/**
 * Codes of the node agent (`hallmark agent`). Statuses matter only where an agent error reaches
 * a caller (the Workload API maps them to gRPC codes); they follow the API's usual meaning.
 */
export const AGENT_ERRORS = {
  // The node's own identity
  agent_cannot_reattest: { status: 401, title: "The node SVID is no longer usable and this node cannot attest again (a join token is used once)" },
  agent_node_removed: { status: 403, title: "The server evicted or banned this node: the agent serves nothing" },
  agent_data_dir_unsafe: { status: 500, title: "The agent's data directory cannot be used safely" },
  // Workload API answers
  jwt_svid_invalid: { status: 401, title: "The JWT-SVID does not verify against this trust domain's JWT bundle" },
} as const satisfies ErrorTable;

export const agentError = errorFactory(AGENT_ERRORS);
