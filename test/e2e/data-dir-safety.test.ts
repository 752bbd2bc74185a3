import { afterAll, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { type Stats, chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, watch, writeFileSync } from "node:fs";
import { setPriority } from "node:os";
import { join } from "node:path";
import { runCli } from "../helpers/cli.js";
import { startServerProcess } from "../helpers/server-process.js";
import { tempDir } from "../helpers/tmp.js";

const tmp = tempDir("datadir");
afterAll(() => tmp.remove());
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

/** The files whose mode must be 0600 in every observation, from their first one. */
const PRIVATE_FILES = ["admin.sock", "hallmark.db", "hallmark.db-wal", "hallmark.db-shm", "server.lock", "server.pid"];

/**
 * Records the mode of every entry of `dir` (and of the admin socket's staging directory inside
 * it) each time it looks: called in a tight loop and on every inotify event during start-up.
 */
class ModeWatcher {
  readonly seen = new Map<string, Set<number>>();
  rounds = 0;
  constructor(private readonly dir: string) {}

  look(dir = this.dir, prefix = ""): void {
    this.rounds++;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      let st: Stats;
      try {
        st = lstatSync(join(dir, name));
      } catch {
        continue; // gone between readdir and lstat
      }
      const key = prefix + name + (st.isDirectory() ? "/" : "");
      if (!this.seen.has(key)) this.seen.set(key, new Set());
      this.seen.get(key)!.add(st.mode & 0o7777);
      if (st.isDirectory() && name.startsWith(".hm-")) this.look(join(dir, name), key);
    }
  }
}

/**
 * A local user (uid nobody) attacking the admin socket: it sleeps on inotify until the name
 * admin.sock appears in the data directory (created, or renamed into place), then at once
 * notes its mode and connects in a tight synchronous loop (Python: Node has no synchronous
 * connect, and an asynchronous loop lands in a short gap too rarely) until told to stop. Prints
 * "denied" on its first EACCES, then JSON: the counts and the first mode it saw.
 */
const ATTACKER = `
import ctypes, errno, json, os, signal, socket, struct, sys
directory = sys.argv[1]
path = os.path.join(directory, "admin.sock")
libc = ctypes.CDLL("libc.so.6", use_errno=True)
fd = libc.inotify_init()
IN_CREATE, IN_MOVED_TO = 0x100, 0x80
assert libc.inotify_add_watch(fd, directory.encode(), IN_CREATE | IN_MOVED_TO) >= 0
print("watching", flush=True)
def appeared():
    while True:
        buf = os.read(fd, 65536)
        i = 0
        while i < len(buf):
            _, _, _, n = struct.unpack_from("iIII", buf, i)
            name = buf[i + 16 : i + 16 + n].rstrip(b"\\0")
            i += 16 + n
            if name == b"admin.sock":
                return
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
appeared()
first_mode = oct(os.lstat(path).st_mode & 0o7777)
counts = {"connected": 0, "EACCES": 0, "ENOENT": 0, "ECONNREFUSED": 0, "other": 0}
while not stop:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        counts["connected"] += 1
    except OSError as e:
        name = errno.errorcode.get(e.errno, "other")
        counts[name if name in counts else "other"] += 1
        if name == "EACCES" and counts["EACCES"] == 1:
            print("denied", flush=True)
    finally:
        s.close()
print(json.dumps({"first_mode": first_mode, **counts}), flush=True)
`;

describe("data directory safety (real server processes)", () => {
  it("under umask 000, the admin socket, the database and its WAL/SHM files are 0600 in every observation, and another local user never connects", async () => {
    // Reachable by other users (0755 all the way down), so only the socket's own mode keeps them out.
    chmodSync(tmp.path, 0o755);
    const data = join(tmp.path, "umask");
    mkdirSync(data, { mode: 0o755 });
    chmodSync(data, 0o755);
    const watcher = new ModeWatcher(data);
    const inotify = watch(data, () => watcher.look());

    const canAttack = isRoot && spawnSync("python3", ["--version"]).status === 0;
    const attacker = canAttack
      ? spawn("python3", ["-c", ATTACKER, data], { uid: NOBODY, gid: NOBODY, stdio: ["ignore", "pipe", "inherit"] })
      : undefined;
    // The attacker wakes first: the old window between bind and chmod was a few hundred microseconds.
    if (attacker) setPriority(attacker.pid!, -20);
    if (!attacker) console.warn("skipping the other-user connect check: it needs root (to run a process as uid nobody) and python3");
    let attackerOut = "";
    attacker?.stdout!.on("data", (c: Buffer) => (attackerOut += c.toString()));
    const said = (word: string) =>
      new Promise<void>((resolve) => {
        const check = () => attackerOut.includes(word) && resolve();
        attacker?.stdout!.on("data", check);
        check();
      });
    if (attacker) await said("watching");
    const denied = said("denied");

    const server = startServerProcess(data, { umask: "000" });
    let started = false;
    void server.ready.then(() => (started = true), () => (started = true));
    while (!started) {
      watcher.look();
      await new Promise((r) => setImmediate(r));
    }
    await server.ready;
    inotify.close();
    watcher.look();

    if (attacker) {
      await denied; // the attacker has met the live socket and been refused at least once
      attacker.kill("SIGTERM");
      await new Promise((r) => attacker.once("close", r));
      const counts = JSON.parse(attackerOut.split("\n").find((l) => l.startsWith("{"))!) as Record<string, number | string>;
      expect(counts.first_mode).toBe("0o600");
      expect(counts.connected).toBe(0);
      expect(counts.EACCES).toBeGreaterThan(0);
    }

    for (const name of PRIVATE_FILES) {
      expect(watcher.seen.get(name), `${name} was observed`).toBeDefined();
      expect([...watcher.seen.get(name)!].map((m) => m.toString(8)), name).toEqual(["600"]);
    }
    // Every directory the server made in it (the SoftHSM token, the socket's staging directory) is private.
    for (const [name, modes] of watcher.seen) {
      if (name.endsWith("/")) expect([...modes].map((m) => m.toString(8)), name).toEqual(["700"]);
    }
    expect(watcher.rounds).toBeGreaterThan(PRIVATE_FILES.length);

    expect(await server.stop()).toBe(0);
    expect(existsSync(join(data, "admin.sock"))).toBe(false);
  });

  it("refuses a group- or world-writable data directory, another user's, and a world-writable admin socket directory: exit 1, one line", async () => {
    const dirWithMode = (name: string, mode: number, owner?: number) => {
      const dir = join(tmp.path, name);
      mkdirSync(dir);
      chmodSync(dir, mode);
      if (owner !== undefined) chownSync(dir, owner, owner);
      return dir;
    };
    const groupWritable = dirWithMode("group-writable", 0o770);
    const worldWritable = dirWithMode("world-writable", 0o1777);
    const socketDir = dirWithMode("sockets", 0o777);
    const cfg = join(tmp.path, "outside.yaml");
    writeFileSync(cfg, `adminSocket: ${join(socketDir, "admin.sock")}\n`);
    const foreign = isRoot ? dirWithMode("foreign", 0o700, NOBODY) : undefined;
    if (!foreign) console.warn("skipping the other-owner check: it needs root to give the directory away");

    const serve = (...args: string[]) => runCli(["server", "--listen", "127.0.0.1:0", ...args]);
    const [group, world, socket, owner] = await Promise.all([
      serve("--data-dir", groupWritable),
      serve("--data-dir", worldWritable),
      serve("--config", cfg, "--data-dir", join(tmp.path, "private")),
      foreign ? serve("--data-dir", foreign) : undefined,
    ]);
    expect(group).toMatchObject({ code: 1, stderr: `hallmark: config_invalid: data directory ${groupWritable} is writable by its group (mode 0770): chmod 700 ${groupWritable}\n` });
    expect(world).toMatchObject({ code: 1, stderr: `hallmark: config_invalid: data directory ${worldWritable} is writable by all users (mode 1777): chmod 700 ${worldWritable}\n` });
    expect(readdirSync(worldWritable)).toEqual([]); // refused before anything was written
    expect(socket).toMatchObject({
      code: 1,
      stderr: `hallmark: config_invalid: admin socket directory ${socketDir} is writable by all users (mode 0777): chmod 700 ${socketDir}\n`,
    });
    if (foreign) {
      expect(owner).toMatchObject({
        code: 1,
        stderr: `hallmark: config_invalid: data directory ${foreign} is owned by uid ${NOBODY}, not by this server's uid 0: chown 0 ${foreign} (or run the server as its owner)\n`,
      });
    }
  });

  it("refuses a second server on the same data directory, naming the first one's pid, while the first keeps its admin socket; after kill -9 of the first, a new server starts", async () => {
    const data = join(tmp.path, "shared");
    const first = startServerProcess(data);
    await first.ready;

    const second = await runCli(["server", "--data-dir", data, "--listen", "127.0.0.1:0"], { HALLMARK_LOG_LEVEL: "silent" });
    expect(second.code).toBe(1);
    expect(second.stderr).toBe(
      `hallmark: data_dir_in_use: data directory ${data} is in use by another hallmark server (pid ${first.pid}); stop it, or give this server another --data-dir\n`,
    );
    const list = await runCli(["node", "list", "--data-dir", data]);
    expect(list).toMatchObject({ code: 0, stdout: "no nodes\n" });

    expect(await first.stop("SIGKILL")).toBe("SIGKILL");
    // The kill left its lock file, pid file and socket behind; none of them may block the next start.
    expect(existsSync(join(data, "server.pid")) && existsSync(join(data, "admin.sock"))).toBe(true);

    // The next server also moves its admin socket out of the data directory, into another private one.
    const socketDir = join(tmp.path, "run");
    mkdirSync(socketDir, { mode: 0o700 });
    const socket = join(socketDir, "hallmark.sock");
    const cfg = join(tmp.path, "run.yaml");
    writeFileSync(cfg, `adminSocket: ${socket}\n`);
    const third = startServerProcess(data, { umask: "000", args: ["--config", cfg] });
    await third.ready;
    expect((lstatSync(socket).mode & 0o7777).toString(8)).toBe("600");
    expect(readdirSync(socketDir)).toEqual(["hallmark.sock"]); // no staging directory left behind
    const again = await runCli(["node", "list", "--admin-socket", socket]);
    expect(again).toMatchObject({ code: 0, stdout: "no nodes\n" });

    // Another data directory, the same configured socket: the live socket is not taken over.
    const other = await runCli(["server", "--config", cfg, "--data-dir", join(tmp.path, "other"), "--listen", "127.0.0.1:0"], { HALLMARK_LOG_LEVEL: "silent" });
    expect(other.code).toBe(1);
    expect(other.stderr).toBe(`hallmark: config_invalid: admin socket ${socket} is in use by another running server; stop it or configure another adminSocket\n`);
    expect((await runCli(["node", "list", "--admin-socket", socket])).code).toBe(0);
    expect(await third.stop()).toBe(0);
    expect(existsSync(socket)).toBe(false);
  });
});
