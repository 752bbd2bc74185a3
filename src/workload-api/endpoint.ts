import { HallmarkError } from "../errors.js";

/** Where the agent serves the Workload API, and where its clients look when told nothing else. */
export const DEFAULT_WORKLOAD_SOCKET = "/run/hallmark/agent.sock";

/** SPIFFE_ENDPOINT_SOCKET as the Workload Endpoint standard writes it (unix:///path or unix:/path), else the default. */
export function socketFromEnvironment(env: NodeJS.ProcessEnv = process.env): string {
  const value = env.SPIFFE_ENDPOINT_SOCKET;
  if (!value) return DEFAULT_WORKLOAD_SOCKET;
  const m = /^unix:(?:\/\/)?(\/.+)$/.exec(value);
  if (!m?.[1]) throw new HallmarkError("invalid_request", `SPIFFE_ENDPOINT_SOCKET '${value}' is not a unix:///path address`);
  return m[1];
}
