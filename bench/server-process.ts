import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const BIN = fileURLToPath(new URL("../../bin/hallmark.js", import.meta.url));

export interface BenchServer {
  /** https://127.0.0.1:PORT as the server reported it. */
  url: string;
  pid: number;
  adminSocket: string;
  /** SIGTERM, then waits for the exit; nothing when it has already exited. */
  stop(): Promise<void>;
}

/** Arguments for node itself in the servers a bench measures (BENCH_SERVER_NODE_ARGS="--cpu-prof …"). */
export const BENCH_NODE_ARGS: string[] = process.env.BENCH_SERVER_NODE_ARGS?.split(" ").filter(Boolean) ?? [];

/**
 * Limits every benchmarked server gets: one bench node asks for thousands of SVIDs a second, and
 * one bench client for thousands of token exchanges, far past the per-node and per-client limits
 * of production (limits.issuanceRate, limits.clientRate).
 */
const BENCH_LIMITS = { issuanceRate: { perSecond: 1_000_000, burst: 1_000_000 }, clientRate: { perSecond: 1_000_000, burst: 1_000_000 } };

/**
 * `hallmark server` in a process of its own on a free loopback port (so the load generator and
 * the server do not share an event loop), its URL read from its "listening on" line. `nodeArgs`
 * go to node itself (BENCH_NODE_ARGS, e.g. --cpu-prof); `o.config` is written to
 * `<dataDir>/bench-config.json` with BENCH_LIMITS under its own `limits`; `o.args` go to
 * `hallmark server` (e.g. --workers 2).
 */
export async function startBenchServer(
  dataDir: string,
  nodeArgs: string[] = [],
  o: { config?: { limits?: Record<string, unknown> } & Record<string, unknown>; args?: string[] } = {},
): Promise<BenchServer> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const configFile = join(dataDir, "bench-config.json");
  writeFileSync(configFile, JSON.stringify({ ...o.config, limits: { ...BENCH_LIMITS, ...o.config?.limits } }));
  const serverArgs = ["--config", configFile, ...(o.args ?? [])];
  const server = spawn(process.execPath, [...nodeArgs, BIN, "server", "--data-dir", dataDir, "--listen", "127.0.0.1:0", ...serverArgs], {
    env: { ...process.env, HALLMARK_LOG_LEVEL: "warn" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const stop = async () => {
    if (server.exitCode !== null || server.signalCode !== null) return;
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
  };
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let err = "";
      server.stderr.on("data", (c: Buffer) => {
        err += c.toString();
        const m = /listening on (https:\/\/\S+)/.exec(err);
        if (m?.[1]) resolve(m[1]);
      });
      server.on("exit", (code) => reject(new Error(`server exited ${code}: ${err}`)));
    });
    return { url, pid: server.pid!, adminSocket: join(dataDir, "admin.sock"), stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * utime + stime of a server, from /proc (Linux), in seconds: the process and its live children
 * (a `--workers N` server is a primary and N workers; the same sum as the Go load generator's).
 */
export function processCpuSeconds(pid: number): number {
  return processTree(pid).reduce((sum, p) => sum + ownCpuSeconds(p), 0);
}

function ownCpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0; // exited between the listing and the read
  }
}

/** `pid` and its descendants, from /proc/PID/task/TID/children (Linux 3.5+). */
export function processTree(pid: number): number[] {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const children = tasks.flatMap((t) => {
    try {
      return readFileSync(`/proc/${pid}/task/${t}/children`, "utf8").split(" ").filter(Boolean).map(Number);
    } catch {
      return [];
    }
  });
  return [pid, ...children.flatMap(processTree)];
}
