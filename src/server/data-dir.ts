import { accessSync, constants, existsSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { writeFileAtomic } from "../client/files.js";
import { type ServerConfig, adminSocketPath } from "../config/server.js";
import { HallmarkError } from "../errors.js";
import { tryExclusiveLock } from "../store/exclusive-lock.js";
import { errnoReason } from "../system-error.js";

export interface ClaimedDataDirectory {
  release(): void;
}

/**
 * Makes the data directory (and the admin socket's directory, when it is configured elsewhere)
 * safe to use, then claims it for this server. The directory holds the HSM token and its PIN,
 * the database and the admin socket: whoever can write to it can replace any of them, so a
 * directory that is group- or world-writable or owned by another user is refused. A second
 * server on the same directory would take the admin socket over and share the SoftHSM token
 * unannounced, so the directory is locked and a second server is refused.
 */
export function claimDataDirectory(config: Pick<ServerConfig, "dataDir" | "adminSocket">): ClaimedDataDirectory {
  const dir = config.dataDir;
  ensurePrivateDirectory(dir, "data directory");
  const socketDir = dirname(adminSocketPath(config));
  if (socketDir !== dir) ensurePrivateDirectory(socketDir, "admin socket directory");

  const lockPath = join(dir, "server.lock");
  const pidPath = join(dir, "server.pid");
  let lock;
  try {
    lock = tryExclusiveLock(lockPath);
  } catch (e) {
    throw new HallmarkError("config_invalid", `cannot lock the data directory ${dir}: ${lockPath}: ${errnoReason(e)}`, { cause: e });
  }
  if (!lock) {
    throw new HallmarkError(
      "data_dir_in_use",
      `data directory ${dir} is in use by another hallmark server (${holderPid(pidPath)}); stop it, or give this server another --data-dir`,
    );
  }
  // The pid is for the message above only: liveness is the kernel's lock, never this file.
  writeFileAtomic(pidPath, `${process.pid}\n`, 0o600);
  return {
    release: () => {
      // The pid file goes first: once the lock is released, it belongs to the next server.
      if (holderPid(pidPath) === `pid ${process.pid}`) rmSync(pidPath, { force: true });
      lock.release();
    },
  };
}

function holderPid(pidPath: string): string {
  try {
    const pid = Number.parseInt(readFileSync(pidPath, "utf8"), 10);
    if (Number.isSafeInteger(pid) && pid > 0) return `pid ${pid}`;
  } catch {
    // Not written yet: the other server took the lock an instant ago.
  }
  return "pid unknown";
}

/** Creates `dir` 0700 if missing; refuses one that others could write to, or that this server cannot. */
export function ensurePrivateDirectory(dir: string, what: string): void {
  const refuse = (why: string, cause?: unknown) => new HallmarkError("config_invalid", `${what} ${dir} ${why}`, { cause });
  let st;
  try {
    st = statSync(dir, { throwIfNoEntry: false });
    if (!st) {
      mkdirPrivate(dir);
      st = statSync(dir);
    }
  } catch (e) {
    throw refuse(`cannot be created: ${errnoReason(e)}`, e);
  }
  if (!st.isDirectory()) throw refuse("is not a directory");
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw refuse(`is owned by uid ${st.uid}, not by this server's uid ${uid}: chown ${uid} ${dir} (or run the server as its owner)`);
  }
  const mode = st.mode & 0o7777;
  if (mode & 0o022) {
    throw refuse(`is writable by ${mode & 0o002 ? "all users" : "its group"} (mode ${mode.toString(8).padStart(4, "0")}): chmod 700 ${dir}`);
  }
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw refuse(`is not writable: ${errnoReason(e)}`, e);
  }
}

function mkdirPrivate(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    // Node's recursive mkdir reports some failures (a read-only file system) as ENOENT: when the
    // parent exists, one plain mkdir gives the real errno.
    if ((e as NodeJS.ErrnoException).code === "ENOENT" && existsSync(dirname(dir))) mkdirSync(dir, { mode: 0o700 });
    throw e;
  }
}
