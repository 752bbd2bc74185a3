import { afterAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { otherUserCliUnavailable, runCli } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * A server that cannot use its data directory or its database says which file and why, in one
 * line with exit 1. The tests run as root, which file modes do not stop: the permission cases
 * run the server as uid nobody, and the read-only file system is a read-only bind mount in a
 * private mount namespace (unshare -m), invisible to the rest of the machine.
 */
const tmp = tempDir("start-errors");
afterAll(() => tmp.remove());
const BIN = fileURLToPath(new URL("../../bin/hallmark.js", import.meta.url));
const QUIET = { HALLMARK_LOG_LEVEL: "silent" };
const NOBODY = 65534;

const serve = (dataDir: string, as: { uid?: number; gid?: number } = {}) =>
  runCli(["server", "--data-dir", dataDir, "--listen", "127.0.0.1:0"], QUIET, as);

/** A directory of its own under a 0755 parent, so that uid nobody can reach it. */
function dirFor(name: string, owner?: number): string {
  chmodSync(tmp.path, 0o755);
  const dir = join(tmp.path, name);
  mkdirSync(dir, { mode: 0o700 });
  if (owner !== undefined) chownSync(dir, owner, owner);
  return dir;
}

describe("start-up errors name the file and the reason", () => {
  it("a database that is a directory", async () => {
    const dir = dirFor("db-is-dir");
    mkdirSync(join(dir, "hallmark.db"));
    const r = await serve(dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`hallmark: datastore_open_failed: cannot open the datastore ${dir}/hallmark.db: it is a directory, not a file\n`);
  });

  it("a database file that is not a database", async () => {
    const dir = dirFor("db-garbage");
    writeFileSync(join(dir, "hallmark.db"), "these bytes are not an SQLite database\n".repeat(200));
    const r = await serve(dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`hallmark: datastore_open_failed: cannot open the datastore ${dir}/hallmark.db: file is not a database\n`);
  });

  it("a data directory that is a file", async () => {
    const file = join(dirFor("file-as-dir"), "data");
    writeFileSync(file, "");
    let r = await serve(file);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`hallmark: config_invalid: data directory ${file} is not a directory\n`);
    r = await serve(join(file, "below"));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`hallmark: config_invalid: data directory ${file}/below cannot be created: not a directory\n`);
  });

  it("a data directory on a read-only file system (bind mount in a private mount namespace)", async (ctx) => {
    const dir = dirFor("read-only-fs");
    const probe = spawnSync("unshare", ["-m", "sh", "-c", `mount --bind ${dir} ${dir} && mount -o remount,bind,ro ${dir}`]);
    if (probe.status !== 0) {
      console.warn(`skipping: cannot make a read-only bind mount here (unshare -m: ${probe.stderr.toString().trim() || probe.error?.message})`);
      ctx.skip();
    }
    const inReadOnly = (dataDir: string) =>
      spawnSync("unshare", ["-m", "sh", "-c", `mount --bind ${dir} ${dir} && mount -o remount,bind,ro ${dir} && exec "$0" "$@"`, process.execPath, BIN, "server", "--data-dir", dataDir, "--listen", "127.0.0.1:0"], {
        env: { ...process.env, ...QUIET },
        encoding: "utf8",
      });
    let r = inReadOnly(dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`hallmark: config_invalid: data directory ${dir} is not writable: read-only file system\n`);
    r = inReadOnly(join(dir, "below"));
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`hallmark: config_invalid: data directory ${dir}/below cannot be created: read-only file system\n`);
  });

  it("as another user: a database it may not open, one it may only read, and a data directory it may only read", async (ctx) => {
    const unavailable = otherUserCliUnavailable();
    if (unavailable) {
      console.warn(`skipping: ${unavailable}`);
      ctx.skip();
    }
    const as = { uid: NOBODY, gid: NOBODY };
    const unreadable = dirFor("unreadable-db", NOBODY);
    writeFileSync(join(unreadable, "hallmark.db"), "");
    chownSync(join(unreadable, "hallmark.db"), NOBODY, NOBODY);
    chmodSync(join(unreadable, "hallmark.db"), 0o000);
    let r = await serve(unreadable, as);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`hallmark: datastore_open_failed: cannot open the datastore ${unreadable}/hallmark.db: permission denied\n`);

    // Readable but not writable: SQLite would open it read-only and fail at the first write.
    chmodSync(join(unreadable, "hallmark.db"), 0o400);
    r = await serve(unreadable, as);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`hallmark: datastore_open_failed: cannot open the datastore ${unreadable}/hallmark.db: permission denied\n`);

    const readOnly = dirFor("read-only-dir", NOBODY);
    chmodSync(readOnly, 0o500);
    r = await serve(readOnly, as);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`hallmark: config_invalid: data directory ${readOnly} is not writable: permission denied\n`);
  });
});
