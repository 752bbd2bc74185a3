import { status, type StatusObject } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { isHallmarkError } from "../errors.js";
import { errorSpec } from "../error-codes.js";

type GrpcError = Pick<StatusObject, "code" | "details">;

/** Codes whose gRPC status the Workload API standard names outright. */
const BY_CODE: Readonly<Record<string, status>> = {
  workload_header_missing: status.INVALID_ARGUMENT,
  workload_request_invalid: status.INVALID_ARGUMENT,
  workload_jwt_invalid: status.INVALID_ARGUMENT,
  workload_not_entitled: status.PERMISSION_DENIED,
  not_entitled: status.PERMISSION_DENIED,
  workload_peer_changed: status.UNAUTHENTICATED,
  workload_peer_unknown: status.UNAUTHENTICATED,
  workload_too_many_streams: status.RESOURCE_EXHAUSTED,
  workload_too_many_fetches: status.RESOURCE_EXHAUSTED,
};

/** Others by their HTTP analogue. */
function byHttpStatus(http: number): status {
  if (http === 401) return status.UNAUTHENTICATED;
  if (http === 403) return status.PERMISSION_DENIED;
  if (http === 404) return status.NOT_FOUND;
  if (http === 429) return status.RESOURCE_EXHAUSTED;
  if (http < 500) return status.INVALID_ARGUMENT;
  return status.UNAVAILABLE;
}

/**
 * A refusal as the gRPC status a workload sees: `<code>: <public message>` for our own errors;
 * anything else is logged in full and answered with a generic UNAVAILABLE (a client retries it).
 */
export function toGrpcError(e: unknown, log: Logger | undefined): GrpcError {
  if (isHallmarkError(e)) {
    const spec = errorSpec(e.code);
    const code = BY_CODE[e.code] ?? byHttpStatus(spec.status);
    if (spec.status >= 500) log?.error({ err: e, code: e.code, internal: e.internal }, "workload API call failed");
    return { code, details: spec.status >= 500 ? `${e.code}: ${spec.title}` : `${e.code}: ${e.message}` };
  }
  log?.error({ err: e }, "workload API call failed");
  return { code: status.UNAVAILABLE, details: "internal: the agent could not answer; retry" };
}
