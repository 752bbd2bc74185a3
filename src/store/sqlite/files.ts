import { accessSync, chmodSync, closeSync, constants, lstatSync, openSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { errnoReason } from "../../system-error.js";

/**
 * The files SQLite keeps beside a database. SQLite creates each of them with the database
 * file's own mode (and fchmods it to that mode whatever the umask), so a 0600 database gives
 * 0600 companions from the moment they exist.
 */
const COMPANIONS = ["-wal", "-shm", "-journal"] as const;

/**
 * Creates `path` empty with mode 0600 unless it exists (an empty file is a valid empty SQLite
 * database), and tightens an existing database and its companions to 0600. SQLite alone would
 * create the database 0644 minus the umask, readable by every local user.
 */
export function ensurePrivateDatabaseFile(path: string): void {
  try {
    // O_EXCL: never follow or reuse something another process put there in between.
    closeSync(openSync(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
  for (const file of [path, ...COMPANIONS.map((suffix) => path + suffix)]) {
    let mode: number;
    try {
      const st = lstatSync(file);
      if (!st.isFile()) continue;
      mode = st.mode & 0o777;
    } catch {
      continue;
    }
    if (mode & 0o077) chmodSync(file, mode & 0o700);
  }
}

/**
 * Why the database at `path` cannot be used, in a few words, or undefined when the file system
 * sees no obstacle. SQLite reports most of these as "unable to open database file" or, worse,
 * opens the file read-only and fails at the first write; asking the file system names the cause.
 */
export function databaseFileObstacle(path: string): string | undefined {
  try {
    accessSync(dirname(path), constants.W_OK | constants.X_OK);
  } catch (e) {
    // The -wal and -shm files are created beside the database.
    return `its directory is not writable (${errnoReason(e)})`;
  }
  let isDirectory: boolean;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ENOENT" ? undefined : errnoReason(e);
  }
  if (isDirectory) return "it is a directory, not a file";
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
  } catch (e) {
    return errnoReason(e);
  }
  return undefined;
}
