import { errorFactory, type ErrorTable } from "../errors.js";

/**
 * Codes of the SPIFFE Workload API (the agent's local socket). The `status` is the HTTP analogue
 * the shared table needs; on the socket each code maps to a gRPC status (src/workload-api/grpc-status.ts).
 */
export const WORKLOAD_API_ERRORS = {
  workload_header_missing: { status: 400, title: "The call lacks the metadata workload.spiffe.io: true" },
  workload_request_invalid: { status: 400, title: "A mandatory field of the Workload API request is empty or malformed" },
  workload_not_entitled: { status: 403, title: "No registration entry matches this workload" },
  // The process that connected is gone (its pid may now be another process): never answer it.
  workload_peer_changed: { status: 401, title: "The calling process is no longer the one that connected" },
  workload_peer_unknown: { status: 401, title: "The kernel did not say who is calling" },
  workload_too_many_streams: { status: 429, title: "This workload holds too many open streams" },
  workload_too_many_fetches: { status: 429, title: "This workload asked for more new JWT-SVIDs than its allowance" },
  workload_jwt_invalid: { status: 400, title: "The JWT-SVID does not validate" },
  workload_socket_in_use: { status: 409, title: "The Workload API socket is held by another running process" },
  // client side (`hallmark workload`): the agent answered with a gRPC error status
  workload_api_refused: { status: 502, title: "The Workload API refused the call" },
  peercred_addon_missing: { status: 500, title: "The peer credentials addon is not built (run scripts/build-native)" },
} as const satisfies ErrorTable;

export const workloadApiError = errorFactory(WORKLOAD_API_ERRORS);
