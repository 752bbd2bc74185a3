import { chmodSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { connectedPeer, type ConnectedPeer } from "../../src/workload-api/peer-credentials.js";
import { finished, spawnAs, type UnixUser } from "./as-user.js";

/**
 * A real Unix socket any user may reach (in `dir`, made 0755), where each accepted connection's
 * peer is handed to a callback while the client waits; the client (node or python, as any user)
 * connects, optionally sends one byte when `ready` (after changing itself), and waits for the hang-up.
 */
export async function peerSocket(dir: string) {
  chmodSync(dir, 0o755);
  const path = join(dir, "peer.sock");
  const waiting: ((s: Socket) => void)[] = [];
  const server = createServer((socket) => waiting.shift()?.(socket));
  await new Promise<void>((done) => server.listen(path, done));
  chmodSync(path, 0o777);

  return {
    path,
    /** Runs `client` as `user`; `onPeer` sees the connection's peer; resolves with its result and the client's pid. */
    async connect<T>(user: UnixUser | undefined, client: { cmd: string; args: string[]; sendsReady?: boolean }, onPeer: (peer: ConnectedPeer) => Promise<T>) {
      const accepted = new Promise<Socket>((done) => waiting.push(done));
      const child = spawnAs(user, client.cmd, [...client.args, path]);
      const exit = finished(child);
      const socket = await accepted;
      const peer = connectedPeer(socket);
      if (client.sendsReady) await new Promise((done) => socket.once("data", done));
      try {
        return { result: await onPeer(peer), pid: child.pid! };
      } finally {
        socket.end();
        await exit;
      }
    },
    close: () => new Promise((done) => server.close(done)),
  };
}

// Clients that connect to argv's socket path and wait until the server hangs up.
export const NODE_CLIENT = {
  cmd: process.execPath,
  args: ["-e", "const s=require('net').connect(process.argv[1]);s.on('data',()=>{});s.on('error',()=>process.exit(3));s.on('close',()=>process.exit(0))"],
};
export const PYTHON_CLIENT = { cmd: "/usr/bin/python3", args: ["-c", "import socket,sys\ns=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);s.recv(1)"] };
