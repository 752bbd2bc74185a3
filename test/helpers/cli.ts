import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const BIN = fileURLToPath(new URL("../../bin/hallmark.js", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

const ROOT = dirname(dirname(BIN));

/**
 * Runs the built `hallmark` CLI as a user would (asynchronously: the server may be in this
 * process); `as` runs it as another user (the tests run as root, which file modes do not stop).
 * That user must reach bin/hallmark.js through directories it may search; when the checkout is
 * under one it may not (a clone made in a 0700 temp directory, as the CI's fresh clone is), the
 * CLI runs from a private mount namespace that shows the checkout's top-level entries under a
 * directory others may search (see checkoutForOthers).
 */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, as: { uid?: number; gid?: number } = {}): Promise<CliResult> {
  if (as.uid !== undefined && cliUnreachableByOthers()) return runCliFromMountedCheckout(args, env, { uid: as.uid, gid: as.gid ?? as.uid });
  return new Promise((done) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, timeout: 60_000, ...as }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      done({ code, stdout, stderr });
    });
  });
}

/**
 * Why runCli cannot run the CLI as another user here, if it cannot: that needs root, and, for a
 * checkout others may not reach, a private mount namespace (unshare -m) to show it to them.
 */
export function otherUserCliUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "running the CLI as another user needs root";
  const unreachable = cliUnreachableByOthers();
  if (!unreachable) return undefined;
  const probe = spawnSync("unshare", ["-m", "true"], { encoding: "utf8" });
  return probe.status === 0 ? undefined : `${unreachable}, and no private mount namespace to show it from (unshare -m: ${probe.stderr.trim() || probe.error?.message})`;
}

/** Why another user cannot reach bin/hallmark.js in place: a directory above it others may not search. */
function cliUnreachableByOthers(): string | undefined {
  for (let dir = dirname(BIN); ; dir = dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return `${dir} is not searchable by other users (mode ${(statSync(dir).mode & 0o777).toString(8)})`;
    if (dir === dirname(dir)) return undefined;
  }
}

/**
 * In a private mount namespace: a tmpfs (mode 0755) on a fresh directory under the system's temp
 * directory, each top-level entry of the checkout bind-mounted into it, and the CLI started from
 * there as `user` (setpriv, no supplementary groups). Nothing is mounted outside the namespace,
 * and no mode in the checkout changes.
 */
const checkoutForOthers = `set -e
root=$1; mnt=$2; uid=$3; gid=$4; node=$5; shift 5
mount -t tmpfs -o mode=0755 hallmark-checkout "$mnt"
for entry in "$root"/*; do
  name=\${entry##*/}
  if [ -d "$entry" ]; then mkdir "$mnt/$name"; else : > "$mnt/$name"; fi
  mount --bind "$entry" "$mnt/$name"
done
cd "$mnt"
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$node" "$mnt/bin/hallmark.js" "$@"`;

function runCliFromMountedCheckout(args: string[], env: NodeJS.ProcessEnv, user: { uid: number; gid: number }): Promise<CliResult> {
  const mnt = mkdtempSync(join(tmpdir(), "hallmark-checkout-"));
  const script = ["-m", "sh", "-c", checkoutForOthers, "sh", ROOT, mnt, String(user.uid), String(user.gid), process.execPath, ...args];
  return run("unshare", script, env).finally(() => rmSync(mnt, { recursive: true, force: true }));
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
