import { chmodSync, lstatSync, mkdtempSync, renameSync, rmSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import type { FastifyInstance } from "fastify";
import { HallmarkError } from "../errors.js";

/**
 * Serves `app` on the admin Unix socket at `path`, and returns the closer that removes it.
 *
 * Whoever can connect to this socket is the administrator, so it must never be reachable with a
 * looser mode than 0600, not even between bind and chmod (binding creates it 0777 minus the
 * umask). It is bound in a fresh 0700 directory beside `path`, where no other user can reach
 * it, made 0600, then renamed into place: the name appears atomically with its final mode, and
 * replaces a stale socket in the same step. A temporary umask would do too, but the umask is
 * process-wide and Fastify's listen is asynchronous, so it would apply to whatever else the
 * process creates meanwhile.
 */
export async function listenOnPrivateSocket(app: FastifyInstance, path: string): Promise<() => Promise<void>> {
  await refuseLiveSocket(path);
  const staging = mkdtempSync(join(dirname(path), ".hm-"));
  let inode: number;
  try {
    chmodSync(staging, 0o700);
    const bound = join(staging, "s");
    await app.listen({ path: bound, listenTextResolver: () => `admin API listening on ${path}` });
    chmodSync(bound, 0o600);
    renameSync(bound, path);
    inode = lstatSync(path).ino;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  // The socket's own listener would unlink only the name it was bound under: remove ours, if it is still ours.
  return async () => {
    try {
      if (lstatSync(path).ino === inode) unlinkSync(path);
    } catch {
      // already gone
    }
  };
}

/** A socket that still answers belongs to a running server: never take it over. */
async function refuseLiveSocket(path: string): Promise<void> {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st?.isSocket()) return;
  const live = await new Promise<boolean>((done) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      done(true);
    });
    s.once("error", () => done(false));
  });
  if (live) throw new HallmarkError("config_invalid", `admin socket ${path} is in use by another running server; stop it or configure another adminSocket`);
}
