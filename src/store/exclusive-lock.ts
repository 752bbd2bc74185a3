import Database from "better-sqlite3";
import { ensurePrivateDatabaseFile } from "./sqlite/files.js";

export interface ExclusiveLock {
  release(): void;
}

/**
 * Takes an exclusive lock on the file at `path` for as long as this process holds it, or
 * returns undefined when another holder has it. The lock is SQLite's POSIX advisory lock on a
 * small database of its own, so the kernel drops it when the holder dies: a kill -9 leaves no
 * stale lock, and unlike a pid-in-a-file lock, a pid reused after a crash (pid 1 in a container
 * restarted on the same volume) can never keep the next start out. It works across processes
 * and, through SQLite's per-file bookkeeping, between two connections of one process.
 */
export function tryExclusiveLock(path: string): ExclusiveLock | undefined {
  ensurePrivateDatabaseFile(path);
  const db = new Database(path, { timeout: 0 });
  try {
    // EXCLUSIVE locking mode keeps the lock of the first write until the connection closes;
    // a journal in memory leaves no -journal file beside it.
    db.pragma("locking_mode = EXCLUSIVE");
    db.pragma("journal_mode = MEMORY");
    db.exec("BEGIN EXCLUSIVE");
    db.exec("CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL)");
    db.exec("DELETE FROM holder");
    db.prepare("INSERT INTO holder (pid) VALUES (?)").run(process.pid);
    db.exec("COMMIT");
  } catch (e) {
    db.close();
    if (String((e as { code?: unknown }).code).startsWith("SQLITE_BUSY")) return undefined;
    throw e;
  }
  return { release: () => db.close() };
}
