import { execFile, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { processTree } from "./server-process.js";

/** bench/loadgen/main.go, from dist/bench or from bench/ (tsx). */
const SOURCE = fileURLToPath(new URL(existsSync(fileURLToPath(new URL("./loadgen/main.go", import.meta.url))) ? "./loadgen/" : "../../bench/loadgen/", import.meta.url));

/** What bench/loadgen/main.go prints for one window (its fields, renamed). */
export interface LoadResult {
  ops: number;
  errors: number;
  firstError?: string;
  seconds: number;
  /** The named server process's utime+stime over the window. */
  cpuSeconds: number;
  /** Its stime alone: the kernel's share (system calls; on loopback the receiving side's TCP work too). */
  sysCpuSeconds: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Fewest and most answers one connection got in the window: a starved connection shows here. */
  minPerConn: number;
  maxPerConn: number;
  conns: number;
}

export interface LoadTarget {
  url: string;
  method?: "GET" | "POST";
  /** JSON bodies, used in turn. */
  bodies?: unknown[];
  /** PEM files: the client's chain and key (mutual TLS) and the server's trust anchors. */
  certFile: string;
  keyFile: string;
  caFile: string;
  /** The server process whose CPU the window is charged to. */
  pid: number;
}

/**
 * Whether to pin: the servers to CPU 0 and the load generator to CPU 1 (`taskset`), so the two
 * never take turns on one core. BENCH_PIN=0 turns it off; it is off with fewer than two CPUs.
 */
export function pinning(): boolean {
  if (process.env.BENCH_PIN === "0") return false;
  try {
    return Number(execFileSync("nproc", { encoding: "utf8" }).trim()) >= 2 && existsSync("/usr/bin/taskset");
  } catch {
    return false;
  }
}

/**
 * Pins a running server, all threads of it and of its child processes (the workers of
 * `--workers N`, forked before this runs), to CPU 0 (see pinning()). A worker forked later
 * inherits the pinned primary's affinity.
 */
export function pinServer(pid: number, cpus = "0"): void {
  if (!pinning()) return;
  for (const p of processTree(pid)) execFileSync("taskset", ["-a", "-p", "-c", cpus, String(p)], { stdio: "ignore" });
}

/** Lets a pinned server (its whole process tree) run on every CPU again; pinServer(pid) pins it back. */
export function unpinServer(pid: number): void {
  pinServer(pid, `0-${Number(execFileSync("nproc", { encoding: "utf8" }).trim()) - 1}`);
}

/**
 * The load generator, built from source with Debian's golang-go (standard library only, no module
 * download): a client that shares nothing with the server. A reason instead when Go is absent.
 */
export async function buildLoadgen(): Promise<{ bin: string; remove: () => void } | { skip: string }> {
  const dir = mkdtempSync(join(tmpdir(), "hallmark-loadgen-"));
  const remove = () => rmSync(dir, { recursive: true, force: true });
  const out = join(dir, "loadgen");
  try {
    await promisify(execFile)("go", ["build", "-o", out, "."], {
      cwd: SOURCE,
      env: { ...process.env, GO111MODULE: "off", GOFLAGS: "", GOCACHE: process.env.GOCACHE ?? join(tmpdir(), "hallmark-gocache") },
    });
    return { bin: out, remove };
  } catch (e) {
    remove();
    return { skip: `the Go load generator did not build (apt-get install golang-go): ${(e as Error).message.split("\n")[0]}` };
  }
}

/** One measured window (after every connection has made one unmeasured request). */
/** `unpinned`: the load generator may use every CPU (and GOMAXPROCS is left to Go), whatever pinning() says. */
export async function runLoad(bin: string, t: LoadTarget, o: { conns: number; seconds: number; rate?: number; unpinned?: boolean }): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), "hallmark-load-"));
  const args = [
    `-url=${t.url}`,
    `-method=${t.method ?? "POST"}`,
    `-cert=${t.certFile}`,
    `-key=${t.keyFile}`,
    `-ca=${t.caFile}`,
    `-conns=${o.conns}`,
    `-seconds=${o.seconds}`,
    `-rate=${o.rate ?? 0}`,
    `-pid=${t.pid}`,
  ];
  if (t.bodies) {
    const file = join(dir, "bodies.jsonl");
    writeFileSync(file, t.bodies.map((b) => JSON.stringify(b)).join("\n"));
    args.push(`-bodies=${file}`);
  }
  try {
    return await runLoadgen(bin, args, o.unpinned);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function runLoadgen(bin: string, args: string[], unpinned: boolean | undefined): Promise<LoadResult> {
  const pinned = pinning() && !unpinned;
  const child = spawn(pinned ? "taskset" : bin, pinned ? ["-c", "1", bin, ...args] : args, {
    env: { ...process.env, ...(pinned ? { GOMAXPROCS: "1" } : {}) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((r) => child.on("exit", r));
  if (code !== 0) throw new Error(`loadgen exited ${code}: ${err.trim()}`);
  const j = JSON.parse(out) as Record<string, number | string | undefined>;
  const n = (k: string) => Number(j[k] ?? 0);
  return {
    ops: n("ops"),
    errors: n("errors"),
    ...(j.first_error ? { firstError: String(j.first_error) } : {}),
    seconds: n("seconds"),
    cpuSeconds: n("cpu_seconds"),
    sysCpuSeconds: n("sys_cpu_seconds"),
    p50Ms: n("p50_ms"),
    p99Ms: n("p99_ms"),
    maxMs: n("max_ms"),
    minPerConn: n("min_per_conn"),
    maxPerConn: n("max_per_conn"),
    conns: n("conns"),
  };
}
