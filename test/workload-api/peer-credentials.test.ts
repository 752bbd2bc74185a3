import { readFileSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isSameProcess, processStartTime } from "../../src/workload-api/peer-credentials.js";
import { finished, NOBODY, spawnAs } from "../helpers/as-user.js";
import { NODE_CLIENT, peerSocket, PYTHON_CLIENT } from "../helpers/peer-socket.js";
import { tempDir } from "../helpers/tmp.js";

describe("peer credentials over a real Unix socket (SO_PEERCRED addon)", () => {
  const dir = tempDir("peercred");
  let socket: Awaited<ReturnType<typeof peerSocket>>;
  beforeAll(async () => {
    socket = await peerSocket(dir.path);
  });
  afterAll(async () => {
    await socket.close();
    dir.remove();
  });

  it("a root client: uid 0, gid 0, its own pid, and its start time", async () => {
    const { result: peer, pid } = await socket.connect(undefined, NODE_CLIENT, async (p) => ({ ...p, now: processStartTime(p.pid) }));
    expect(peer).toMatchObject({ pid, uid: 0, gid: 0 });
    expect(peer.startTime).toBe(peer.now);
  });

  it("a client running as nobody (setpriv): uid and gid 65534, its own pid", async () => {
    const { result: peer, pid } = await socket.connect(NOBODY, NODE_CLIENT, async (p) => p);
    expect(peer).toMatchObject({ pid, uid: 65534, gid: 65534 });
  });

  it("a python client as uid 65534 with gid 100: the kernel reports exactly those", async () => {
    const { result: peer, pid } = await socket.connect({ uid: 65534, gid: 100 }, PYTHON_CLIENT, async (p) => p);
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
