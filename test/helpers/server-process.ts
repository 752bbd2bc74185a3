import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

// From test/helpers, or from dist/test/helpers when a bench (built to dist/) uses this helper.
const BIN = ["../../bin/hallmark.js", "../../../bin/hallmark.js"].map((p) => fileURLToPath(new URL(p, import.meta.url))).find((p) => existsSync(p))!;

export interface ServerProcess {
  child: ChildProcess;
  pid: number;
  /** Resolves when the server prints its ready line; rejects with its stderr if it exits first. */
  ready: Promise<void>;
  /** Resolves with the exit code (or the signal's name) once the process has ended. */
  exited: Promise<number | string>;
  stderr(): string;
  /** SIGTERM (a clean stop) by default; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

/**
 * `hallmark server` as a separate, real process (the built CLI), on a free loopback port.
 * With `umask`, it runs under that umask (a shell sets it, then execs node, so the pid is the
 * server's own).
 */
export function startServerProcess(dataDir: string, opts: { umask?: string; args?: string[]; env?: NodeJS.ProcessEnv } = {}): ServerProcess {
  const argv = [BIN, "server", "--data-dir", dataDir, "--listen", "127.0.0.1:0", ...(opts.args ?? [])];
  const env = { ...process.env, HALLMARK_LOG_LEVEL: "silent", ...opts.env };
  const child = opts.umask
    ? spawn("sh", ["-c", `umask ${opts.umask} && exec "$0" "$@"`, process.execPath, ...argv], { env, stdio: ["ignore", "ignore", "pipe"] })
    : spawn(process.execPath, argv, { env, stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  const exited = new Promise<number | string>((done) => child.once("exit", (code, signal) => done(code ?? signal ?? -1)));
  const ready = new Promise<void>((resolve, reject) => {
    child.stderr!.on("data", (chunk: Buffer) => {
      err += chunk.toString();
      if (err.includes("hallmark server listening on")) resolve();
    });
    void exited.then((code) => reject(new Error(`server exited (${code}) before it was ready: ${err.trim()}`)));
  });
  return {
    child,
    pid: child.pid!,
    ready,
    exited,
    stderr: () => err,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
