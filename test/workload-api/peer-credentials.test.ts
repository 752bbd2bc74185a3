import { chmodSync, readFileSync, symlinkSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectedPeer, type ConnectedPeer, isSameProcess, processStartTime } from "../../src/workload-api/peer-credentials.js";
import { finished, NOBODY, spawnAs, type UnixUser } from "../helpers/as-user.js";
import { tempDir } from "../helpers/tmp.js";

// A client that connects and waits until the server hangs up, so its pid is alive while the server reads.
const NODE_CLIENT = "const s=require('net').connect(process.argv[1]);s.on('data',()=>{});s.on('error',()=>process.exit(3));s.on('close',()=>process.exit(0))";
const PY_CLIENT = "import socket,sys\ns=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);s.recv(1)";

describe("peer credentials over a real Unix socket (SO_PEERCRED addon)", () => {
  const dir = tempDir("peercred");
  const path = join(dir.path, "peer.sock");
  let server: Server;
  const waiting: ((peer: ConnectedPeer) => void)[] = [];

  beforeAll(async () => {
    chmodSync(dir.path, 0o755);
    server = createServer((socket: Socket) => {
      const peer = connectedPeer(socket);
      socket.end();
      waiting.shift()?.(peer);
    });
    await new Promise<void>((done) => server.listen(path, done));
    chmodSync(path, 0o777);
  });
  afterAll(async () => {
    await new Promise((done) => server.close(done));
    dir.remove();
  });

  async function connectAs(user: UnixUser | undefined, lang: "node" | "python") {
    const seen = new Promise<ConnectedPeer>((done) => waiting.push(done));
    const child =
      lang === "node" ? spawnAs(user, process.execPath, ["-e", NODE_CLIENT, path]) : spawnAs(user, "/usr/bin/python3", ["-c", PY_CLIENT, path]);
    const result = finished(child);
    const peer = await seen;
    expect((await result).code).toBe(0);
    return { peer, pid: child.pid! };
  }

  it("a root client: uid 0, gid 0, its own pid", async () => {
    const { peer, pid } = await connectAs(undefined, "node");
    expect(peer).toMatchObject({ pid, uid: 0, gid: 0 });
  });

  it("a client running as nobody (setpriv): uid and gid 65534, its own pid", async () => {
    const { peer, pid } = await connectAs(NOBODY, "node");
    expect(peer).toMatchObject({ pid, uid: 65534, gid: 65534 });
  });

  it("a python client as uid 65534 with gid 100: the kernel reports exactly those", async () => {
    const { peer, pid } = await connectAs({ uid: 65534, gid: 100 }, "python");
    expect(peer).toMatchObject({ pid, uid: 65534, gid: 100 });
  });

  // Pid reuse cannot be forced reliably in a test, so the guard is proved on its comparison: a
  // real process's real start time matches, any other value does not, and an exited process never does.
  it("the pid-reuse guard: the real start time matches, a changed one or an exited process does not", async () => {
    const child = spawnAs(undefined, "sleep", ["30"]);
    const start = processStartTime(child.pid!);
    expect(start).toMatch(/^\d+$/);
    expect(isSameProcess(child.pid!, start!)).toBe(true);
    expect(isSameProcess(child.pid!, String(BigInt(start!) + 1n))).toBe(false);
    const done = finished(child);
    child.kill("SIGKILL");
    await done;
    expect(isSameProcess(child.pid!, start!)).toBe(false);
  });

  it("reads the start time after a command name holding spaces and parentheses", async () => {
    // The kernel names a process after the file it executed: a link named "x) y z" makes the
    // comm field "(x) y z)", which the parser must skip by counting fields from the last ')'.
    const link = join(dir.path, "x) y z");
    symlinkSync("/bin/sleep", link);
    const child = spawnAs(undefined, link, ["30"]);
    expect(readFileSync(`/proc/${child.pid}/stat`, "utf8")).toContain("(x) y z)");
    const theirs = processStartTime(child.pid!);
    expect(theirs).toMatch(/^\d+$/);
    expect(BigInt(theirs!)).toBeGreaterThanOrEqual(BigInt(processStartTime(process.pid)!));
    expect(isSameProcess(child.pid!, theirs!)).toBe(true);
    child.kill("SIGKILL");
    await finished(child);
  });
});
