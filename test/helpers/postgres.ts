import { spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, renameSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { NOBODY, type UnixUser } from "./as-user.js";

/**
 * A private PostgreSQL cluster for one test file: Debian's binaries (found under
 * /usr/lib/postgresql/<version>/bin, newest first), initdb'd into a temporary directory owned by
 * an unprivileged user (initdb and postgres refuse root), listening on a free loopback port and
 * on a Unix socket in that directory, trust authentication, fsync off (nothing here must survive a
 * power cut). Nothing system-wide is used or changed.
 */
export interface PostgresCluster {
  port: number;
  /** postgres://hallmark@127.0.0.1:PORT/DB */
  url(database: string): string;
  /** CREATE DATABASE with a fresh name; returns its url. */
  createDatabase(prefix?: string): Promise<string>;
  /** pg_ctl stop -m immediate: the server dies as on a crash, connections drop at once. */
  kill(): void;
  /** Starts it again on the same port and data directory. */
  start(): void;
  /** Stops it and removes its directory. */
  destroy(): void;
  /** Milliseconds the first start took (with initdb when no template existed yet). */
  startMs: number;
}

const USER = "hallmark";

export function postgresBinDir(): string {
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) {
    const bin = join(root, v, "bin");
    if (existsSync(join(bin, "initdb")) && existsSync(join(bin, "pg_ctl"))) return bin;
  }
  throw new Error("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run scripts/install-deps.sh");
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * Who runs the cluster: nobody when the tests run as root (initdb and postgres refuse root),
 * otherwise the test user itself.
 */
const CLUSTER_USER: UnixUser = process.getuid?.() === 0 ? NOBODY : { uid: process.getuid!(), gid: process.getgid!() };

function runAs(user: UnixUser, cmd: string, args: string[]): void {
  const asOther = user.uid !== process.getuid?.();
  const [file, argv] = asOther ? ["setpriv", [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--", cmd, ...args]] : [cmd, args];
  const r = spawnSync(file, argv, {
    encoding: "utf8",
    // initdb and pg_ctl want a current directory they can read.
    cwd: "/",
    env: { ...process.env, LC_ALL: "C", LANG: "C" },
  });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr || r.stdout}`);
}

/**
 * A freshly initdb'd data directory, made once per machine for these binaries and this user and
 * kept in the temporary directory (made under another name, then renamed: two test files
 * creating it at once both succeed, one copy wins). Never started itself: copies are.
 */
function clusterTemplate(bin: string, user: UnixUser): string {
  const path = join(tmpdir(), `hallmark-pg-template-${bin.split("/").at(-2)}-${user.uid}`);
  if (existsSync(join(path, "PG_VERSION"))) return path;
  const work = mkdtempSync(join(tmpdir(), "hallmark-pg-template-work-"));
  chownSync(work, user.uid, user.gid);
  runAs(user, join(bin, "initdb"), ["-D", join(work, "data"), "-U", USER, "--auth=trust", "--no-locale", "--encoding=UTF8", "--no-sync"]);
  try {
    renameSync(join(work, "data"), path);
  } catch {
    // Another file made it first: use theirs.
  }
  rmSync(work, { recursive: true, force: true });
  return path;
}

/**
 * `durableCommits`: synchronous_commit on, so a commit acknowledged before a crash (pg_ctl stop
 * -m immediate) survives it; off by default (faster, and nothing else here needs it).
 */
export async function startPostgresCluster(user: UnixUser = CLUSTER_USER, opts: { durableCommits?: boolean } = {}): Promise<PostgresCluster> {
  const t0 = Date.now();
  const bin = postgresBinDir();
  const dir = mkdtempSync(join(tmpdir(), "hallmark-pg-"));
  chownSync(dir, user.uid, user.gid);
  const data = join(dir, "data");
  const port = await freePort();
  // initdb takes seconds; a copy of a cluster initdb'd once (per binaries and user) takes a fraction.
  const template = clusterTemplate(bin, user);
  const cp = spawnSync("cp", ["-a", template, data]);
  if (cp.status !== 0) throw new Error(`cp ${template} failed: ${cp.stderr?.toString()}`);
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=${opts.durableCommits ? "on" : "off"} -c full_page_writes=off -c max_connections=200`;
  const start = () => runAs(user, join(bin, "pg_ctl"), ["-D", data, "-l", join(dir, "log"), "-o", options, "-w", "-t", "30", "start"]);
  start();
  const startMs = Date.now() - t0;
  const url = (db: string) => `postgres://${USER}@127.0.0.1:${port}/${db}`;
  let n = 0;
  return {
    port,
    url,
    startMs,
    async createDatabase(prefix = "t") {
      const name = `${prefix}_${process.pid}_${++n}`;
      const c = new pg.Client({ connectionString: url("postgres") });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      return url(name);
    },
    kill: () => runAs(user, join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"]),
    start,
    destroy() {
      try {
        runAs(user, join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"]);
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
