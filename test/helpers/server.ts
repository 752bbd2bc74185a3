import { join } from "node:path";
import type { Logger } from "pino";
import { loadServerConfig, type ServerConfig } from "../../src/config/server.js";
import { createLogger } from "../../src/log.js";
import { type RunningServer, startServer } from "../../src/server/run.js";
import type { Clock } from "../../src/service/clock.js";
import { tempDir } from "./tmp.js";

export interface TestServer extends RunningServer {
  dataDir: string;
  config: ServerConfig;
  /** Stops the server and removes its data directory. */
  destroy(): Promise<void>;
}

/**
 * A real Hallmark server in this process: SoftHSM2 token and SQLite database in a fresh
 * temporary data directory, HTTPS on a free loopback port, admin socket in the data dir.
 * SoftHSM2 reads its configuration once per process, so one test file runs one data directory
 * at a time (restart it with `startTestServer({ dataDir })`).
 */
export async function startTestServer(
  opts: { dataDir?: string; overrides?: Record<string, unknown>; clock?: Clock; configFile?: string; log?: Logger } = {},
): Promise<TestServer> {
  const dir = opts.dataDir ? undefined : tempDir("server");
  const dataDir = opts.dataDir ?? dir!.path;
  const config = loadServerConfig({ dataDir, listen: "127.0.0.1:0", config: opts.configFile }, {});
  // Every test client connects from 127.0.0.1, and most from one node: per-address and per-node
  // limits would make unrelated tests depend on how many requests they send. Tests of the limits
  // set `limits` in their overrides.
  config.limits = {
    ...config.limits,
    maxConnectionsPerAddress: 100_000,
    attestRate: { ...config.limits.attestRate, perSecond: 1_000_000, burst: 1_000_000 },
    issuanceRate: { ...config.limits.issuanceRate, perSecond: 1_000_000, burst: 1_000_000 },
    clientRate: { ...config.limits.clientRate, perSecond: 1_000_000, burst: 1_000_000 },
  };
  // One level deep: `{ svid: { x509Ttl: 8 } }` keeps the section's other defaults (witTtl, maxTtl…).
  const sections = config as unknown as Record<string, unknown>;
  for (const [key, value] of Object.entries(opts.overrides ?? {})) {
    const current = sections[key];
    const both = [current, value].every((v) => typeof v === "object" && v !== null && !Array.isArray(v));
    sections[key] = both ? { ...(current as object), ...(value as object) } : value;
  }
  const log = opts.log ?? createLogger(process.env.HALLMARK_TEST_LOG ?? "silent");
  const server = await startServer(config, log, opts.clock);
  return {
    ...server,
    dataDir,
    config,
    destroy: async () => {
      await server.close();
      dir?.remove();
    },
  };
}

export function adminSocketOf(dataDir: string): string {
  return join(dataDir, "admin.sock");
}
