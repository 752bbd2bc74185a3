import { createHash } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import { Writable } from "node:stream";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unixWorkloadAttestor } from "../../src/workload-api/unix-attestor.js";
import { NOBODY } from "../helpers/as-user.js";
import { NODE_CLIENT, peerSocket, PYTHON_CLIENT } from "../helpers/peer-socket.js";
import { tempDir } from "../helpers/tmp.js";

// Real processes under real uids; names come from this machine's /etc/passwd and /etc/group
// (Debian: 65534 is nobody / nogroup, 100 is the group users).
describe("unix workload attestor (SPIRE's selector names)", () => {
  const dir = tempDir("unix-attestor");
  let socket: Awaited<ReturnType<typeof peerSocket>>;
  beforeAll(async () => {
    socket = await peerSocket(dir.path);
  });
  afterAll(async () => {
    await socket.close();
    dir.remove();
  });

  it("nobody with no supplementary groups: uid, user, gid, group and nothing else", async () => {
    const attestor = unixWorkloadAttestor();
    const { result } = await socket.connect(NOBODY, NODE_CLIENT, (peer) => attestor.attest(peer));
    expect(result).toEqual(["unix:uid:65534", "unix:user:nobody", "unix:gid:65534", "unix:group:nogroup"]);
  });

  it("supplementary groups from /proc, by id and by name; the primary gid from the kernel", async () => {
    const attestor = unixWorkloadAttestor();
    const { result } = await socket.connect({ uid: 65534, gid: 100, groups: [100, 65534] }, PYTHON_CLIENT, (peer) => attestor.attest(peer));
    expect(result).toEqual([
      "unix:uid:65534",
      "unix:user:nobody",
      "unix:gid:100",
      "unix:group:users",
      "unix:supplementary_gid:100",
      "unix:supplementary_group:users",
      "unix:supplementary_gid:65534",
      "unix:supplementary_group:nogroup",
    ]);
  });

  it("a uid and gid with no account: id selectors only, no names", async () => {
    const attestor = unixWorkloadAttestor();
    const { result } = await socket.connect({ uid: 4242, gid: 4243 }, NODE_CLIENT, (peer) => attestor.attest(peer));
    expect(result).toEqual(["unix:uid:4242", "unix:gid:4243"]);
  });

  it("path discovery: unix:path is the executable, unix:sha256 its digest as sha256 computes it", async () => {
    const attestor = unixWorkloadAttestor({ discoverWorkloadPath: true });
    const { result } = await socket.connect(NOBODY, PYTHON_CLIENT, (peer) => attestor.attest(peer));
    const exe = realpathSync("/usr/bin/python3");
    const digest = createHash("sha256").update(readFileSync(exe)).digest("hex");
    expect(result).toContain(`unix:path:${exe}`);
    expect(result).toContain(`unix:sha256:${digest}`);
  });

  it("an executable over the size limit: unix:path but no unix:sha256, and a debug line says why", async () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (c: Buffer, _e, done) => (lines.push(c.toString()), done()) });
    const attestor = unixWorkloadAttestor({ discoverWorkloadPath: true, workloadSizeLimit: 1024, log: pino({ level: "debug" }, sink) });
    const { result } = await socket.connect(NOBODY, PYTHON_CLIENT, (peer) => attestor.attest(peer));
    expect(result).toContain(`unix:path:${realpathSync("/usr/bin/python3")}`);
    expect(result.some((s) => s.startsWith("unix:sha256:"))).toBe(false);
    expect(lines.join("")).toContain("over the size limit");
  });

  it("a process that changed its user after connecting is refused, not described by two identities", async () => {
    const attestor = unixWorkloadAttestor();
    // Connects as root, then becomes nobody, then says so with one byte.
    const client = {
      cmd: "/usr/bin/python3",
      args: ["-c", "import socket,sys,os\ns=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);os.setgroups([]);os.setgid(65534);os.setuid(65534);s.send(b'r');s.recv(1)"],
      sendsReady: true,
    };
    const { result } = await socket.connect(undefined, client, (peer) =>
      attestor.attest(peer).then(
        () => "attested",
        (e: { code?: string }) => e.code,
      ),
    );
    expect(result).toBe("workload_peer_changed");
  });
});
