import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { run } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 8, a fresh machine: the quick-start scripts run with stand-ins for node, apt-get,
 * dpkg-query, sudo and npm first on PATH. Each stand-in is a small shell script that records its
 * arguments, so the tests see what the scripts would do without touching the machine's packages.
 */

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const work = tempDir("install-scripts");
afterAll(() => work.remove());
let n = 0;

/** A directory of stand-in commands; every call is appended to calls.log as "name args...". */
function fakeBin(scripts: Record<string, string>): { path: string; calls: () => string[] } {
  const dir = join(work.path, `bin${n++}`);
  const log = join(dir, "calls.log");
  mkdirSync(dir);
  for (const [name, body] of Object.entries(scripts)) {
    const file = join(dir, name);
    writeFileSync(file, `#!/usr/bin/env bash\necho "${name} $*" >> ${JSON.stringify(log)}\n${body}\n`, { flag: "w" });
    chmodSync(file, 0o755);
  }
  return { path: dir, calls: () => (existsSync(log) ? readFileSync(log, "utf8").trim().split("\n") : []) };
}

const node = (version: string) => `echo ${version}`;
/** dpkg-query: nothing is installed, so install-deps installs everything it needs. */
const NOTHING_INSTALLED = { "dpkg-query": "exit 1", sudo: 'exec "$@"', npm: "exit 0" };

function runScript(script: string, bin: { path: string }, env: NodeJS.ProcessEnv = {}) {
  return run(join(ROOT, "scripts", script), [], { PATH: `${bin.path}:${process.env.PATH}`, ...env });
}

describe("the Node.js version check", () => {
  it("refuses Debian 12's Node.js 18 with what to install, and accepts 20.19 and later", async () => {
    const results = await Promise.all(
      ["v18.20.4", "v20.18.1", "v20.19.0", "v22.11.0"].map((v) => runScript("check-node", fakeBin({ node: node(v) }))),
    );
    const [old18, old20, ok20, ok22] = results;
    for (const [r, v] of [[old18!, "v18.20.4"], [old20!, "v20.18.1"]] as const) {
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`hallmark: Node.js 20.19 or later is required; this machine has ${v}`);
      for (const what of ["NodeSource", "nvm install 22", "Debian 13", "Debian 12's own nodejs package (18.x) is too old"]) expect(r.stderr).toContain(what);
    }
    for (const r of [ok20!, ok22!]) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe("");
    }
  });

  it.each(["start", "test"])("is the first thing scripts/%s does: nothing is installed or built with an old Node.js", async (script) => {
    const bin = fakeBin({ node: node("v18.20.4"), "apt-get": "exit 0", ...NOTHING_INSTALLED, npx: "exit 0" });
    const r = await runScript(script, bin);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^hallmark: Node.js 20.19 or later is required; this machine has v18.20.4/);
    // Only `node --version` ran: no dpkg-query, apt-get, npm or npx.
    expect(bin.calls()).toEqual(["node --version"]);
  });
});

describe("install-deps.sh on a fresh machine", () => {
  it("installs the build tools for the native modules and waits for the apt lock, in update and install alike", async () => {
    const bin = fakeBin({ node: node("v22.11.0"), "apt-get": "exit 0", ...NOTHING_INSTALLED });
    const r = await runScript("install-deps.sh", bin);
    expect(r.code, r.stderr).toBe(0);
    const apt = bin.calls().filter((c) => c.startsWith("apt-get "));
    expect(apt).toHaveLength(2);
    const [update, install] = apt;
    expect(update).toBe("apt-get -o DPkg::Lock::Timeout=120 update -qq");
    expect(install).toMatch(/^apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends /);
    for (const pkg of ["softhsm2", "swtpm", "tpm2-tools", "openssl", "python3", "make", "g++"]) expect(install!.split(" ")).toContain(pkg);
  });

  it("retries apt-get update while another apt holds the lists lock, then installs", async () => {
    const count = join(work.path, "update-count");
    writeFileSync(count, "0");
    // The first two updates find the lock held, as when unattended-upgrades runs at first boot.
    const aptGet = `if [ "$3" = update ]; then c=$(( $(cat ${count}) + 1 )); echo $c > ${count}; if [ $c -le 2 ]; then echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2; exit 100; fi; fi; exit 0`;
    const bin = fakeBin({ node: node("v22.11.0"), "apt-get": aptGet, ...NOTHING_INSTALLED });
    const r = await runScript("install-deps.sh", bin, { HALLMARK_APT_LOCK_TIMEOUT: "60" });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain("install-deps: waiting up to 60 s for the apt lock");
    const apt = bin.calls().filter((c) => c.startsWith("apt-get "));
    expect(apt.map((c) => c.split(" ")[3])).toEqual(["update", "update", "update", "install"]);
  });

  it("gives up after the bound with a line that says why", async () => {
    const aptGet = `echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2; exit 100`;
    const bin = fakeBin({ node: node("v22.11.0"), "apt-get": aptGet, ...NOTHING_INSTALLED });
    const r = await runScript("install-deps.sh", bin, { HALLMARK_APT_LOCK_TIMEOUT: "2" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("install-deps: the apt lock was still held after 2 s (HALLMARK_APT_LOCK_TIMEOUT)");
    expect(bin.calls().some((c) => c.includes(" install "))).toBe(false);
  });

  it("does not retry a failure that is not the lock", async () => {
    const bin = fakeBin({ node: node("v22.11.0"), "apt-get": `echo "E: The repository is not signed." >&2; exit 100`, ...NOTHING_INSTALLED });
    const r = await runScript("install-deps.sh", bin);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("E: The repository is not signed.");
    expect(bin.calls().filter((c) => c.startsWith("apt-get "))).toHaveLength(1);
  });
});

describe("the quick start's output", () => {
  it("is ignored by git: node/ and web/ hold private keys", async () => {
    const r = await run("git", ["-C", ROOT, "check-ignore", "node/svid.key", "web/svid.key", "bundle.pem"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n")).toEqual(["node/svid.key", "web/svid.key", "bundle.pem"]);
  });
});
