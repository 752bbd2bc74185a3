import type { FastifyInstance } from "fastify";
import { HallmarkError } from "../errors.js";
import { bindUnixSocket, isLiveSocket } from "./unix-socket.js";

/**
 * Serves `app` on the admin Unix socket at `path`, and returns the closer that removes it.
 * Whoever can connect to this socket is the administrator, so it is bound 0600 from the start
 * (bindUnixSocket), and a socket another running server still answers on is never taken over.
 */
export async function listenOnPrivateSocket(app: FastifyInstance, path: string): Promise<() => Promise<void>> {
  if (await isLiveSocket(path)) {
    throw new HallmarkError("config_invalid", `admin socket ${path} is in use by another running server; stop it or configure another adminSocket`);
  }
  const remove = await bindUnixSocket(path, 0o600, async (bound) => {
    // exclusive: in a cluster worker, bound by this process itself, never handed to the primary.
    await app.listen({ path: bound, exclusive: true, listenTextResolver: () => `admin API listening on ${path}` });
  });
  return async () => remove();
}
