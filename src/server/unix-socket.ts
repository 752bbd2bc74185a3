import { chmodSync, lstatSync, mkdtempSync, renameSync, rmSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { dirname, join } from "node:path";

/**
 * Binds a Unix socket at `path` with exactly `mode`, never looser, not even between bind and
 * chmod (binding creates it 0777 minus the umask): `listen` binds it in a fresh 0700 directory
 * beside `path`, where no other user can reach it; it is made `mode`, then renamed into place, so
 * the name appears atomically with its final mode and replaces a stale socket in the same step.
 * A temporary umask would do too, but the umask is process-wide and listening is asynchronous.
 * Returns the remover, which unlinks the name only if it is still ours.
 */
export async function bindUnixSocket(path: string, mode: number, listen: (boundPath: string) => Promise<void>): Promise<() => void> {
  const staging = mkdtempSync(join(dirname(path), ".hm-"));
  let inode: number;
  try {
    chmodSync(staging, 0o700);
    const bound = join(staging, "s");
    await listen(bound);
    chmodSync(bound, mode);
    renameSync(bound, path);
    inode = lstatSync(path).ino;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  // The socket's own listener would unlink only the name it was bound under: remove ours, if it is still ours.
  return () => {
    try {
      if (lstatSync(path).ino === inode) unlinkSync(path);
    } catch {
      // already gone
    }
  };
}

/** True when a socket file at `path` still answers: it belongs to a running process, never take it over. */
export async function isLiveSocket(path: string): Promise<boolean> {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st?.isSocket()) return false;
  return new Promise<boolean>((done) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      done(true);
    });
    s.once("error", () => done(false));
  });
}
