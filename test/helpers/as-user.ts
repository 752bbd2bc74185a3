import { type ChildProcess, spawn } from "node:child_process";

/** A real uid/gid (and supplementary groups) to run a test workload as. */
export interface UnixUser {
  uid: number;
  gid: number;
  /** Supplementary groups; none when absent. */
  groups?: number[];
}

export const NOBODY: UnixUser = { uid: 65534, gid: 65534 };

/**
 * Starts `cmd` as `user` through setpriv (util-linux), which execs in place: the child's pid is
 * the workload's pid, the one the kernel reports over SO_PEERCRED. Without a user it runs as us (root).
 */
export function spawnAs(user: UnixUser | undefined, cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const e = { ...process.env, ...env };
  if (!user) return spawn(cmd, args, { env: e, stdio: ["ignore", "pipe", "pipe"] });
  const groups = user.groups?.length ? [`--groups=${user.groups.join(",")}`] : ["--clear-groups"];
  return spawn("setpriv", [`--reuid=${user.uid}`, `--regid=${user.gid}`, ...groups, "--", cmd, ...args], {
    env: e,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Collects a child's output and exit code. */
export function finished(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((done) => child.on("close", (code) => done({ code, stdout, stderr })));
}
