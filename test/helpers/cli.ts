import { execFile } from "node:child_process";
import { statSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

const BIN = fileURLToPath(new URL("../../bin/hallmark.js", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the built `hallmark` CLI as a user would (asynchronously: the server may be in this
 * process); `as` runs it as another user (the tests run as root, which file modes do not stop).
 */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, as: { uid?: number; gid?: number } = {}): Promise<CliResult> {
  return new Promise((done) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, timeout: 60_000, ...as }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      done({ code, stdout, stderr });
    });
  });
}

/**
 * Why another user (uid nobody) cannot run the built CLI from this checkout, if it cannot: every
 * directory above bin/hallmark.js must be searchable by others. A clone made under a 0700 temp
 * directory is not; tests that run the CLI as another user skip there and say so.
 */
export function cliUnreachableByOthers(): string | undefined {
  for (let dir = dirname(BIN); ; dir = dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return `${dir} is not searchable by other users (mode ${(statSync(dir).mode & 0o777).toString(8)}), so uid nobody cannot run ${BIN}`;
    if (dir === dirname(dir)) return undefined;
  }
}

/** Runs any command asynchronously (openssl, tpm2-tools…). */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((done) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      done({ code, stdout, stderr });
    });
  });
}
