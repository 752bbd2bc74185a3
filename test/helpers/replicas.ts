import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { findSoftHsmModule } from "../../src/hsm/softhsm.js";
import { type PostgresCluster, startPostgresCluster } from "./postgres.js";
import { type ServerProcess, startServerProcess } from "./server-process.js";
import { tempDir } from "./tmp.js";

/** One `hallmark server` replica: a real process with its own data directory and port. */
export interface Replica {
  name: string;
  url: string;
  adminSocket: string;
  process: ServerProcess;
  admin(method: string, path: string, body?: unknown): Promise<unknown>;
}

/**
 * Several replicas as production runs them: one PostgreSQL database (a private cluster), one
 * SoftHSM2 token made once (its directory named by SOFTHSM2_CONF in every replica's environment,
 * the keys found by label), each replica its own data directory and loopback port.
 */
export interface ReplicaSet {
  cluster: PostgresCluster;
  dbUrl: string;
  start(name: string, config?: Record<string, unknown>): Promise<Replica>;
  /** A query on the shared database (what the tests check the replicas wrote). */
  query<T extends Record<string, unknown>>(sql: string, args?: unknown[]): Promise<T[]>;
  destroy(): Promise<void>;
}

export async function startReplicaSet(prefix: string, opts: { durableCommits?: boolean } = {}): Promise<ReplicaSet> {
  const work = tempDir(prefix);
  const cluster = await startPostgresCluster(undefined, opts);
  const dbUrl = await cluster.createDatabase(prefix.replace(/\W/g, "_"));
  const hsmDir = join(work.path, "softhsm");
  mkdirSync(join(hsmDir, "tokens"), { recursive: true, mode: 0o700 });
  const conf = join(hsmDir, "softhsm2.conf");
  writeFileSync(conf, `directories.tokendir = ${join(hsmDir, "tokens")}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const pinFile = join(hsmDir, "user.pin");
  writeFileSync(pinFile, "1234\n", { mode: 0o600 });
  const init = spawnSync("softhsm2-util", ["--init-token", "--free", "--label", "hallmark", "--pin", "1234", "--so-pin", "5678"], {
    env: { ...process.env, SOFTHSM2_CONF: conf },
    encoding: "utf8",
  });
  if (init.status !== 0) throw new Error(`softhsm2-util failed: ${init.stderr}`);
  const db = new pg.Pool({ connectionString: dbUrl, max: 2 });
  // Idle connections dropped by a database restart (the fault tests) are no failure of the test.
  db.on("error", () => undefined);
  const started: Replica[] = [];
  return {
    cluster,
    dbUrl,
    async start(name, config = {}) {
      const dataDir = join(work.path, name);
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      const file = join(work.path, `${name}.yaml`);
      const base = {
        trustDomain: "example.org",
        store: { driver: "postgres", url: dbUrl },
        hsm: { modulePath: findSoftHsmModule(), tokenLabel: "hallmark", pinFile, softhsmAutoInit: false },
        limits: { maxConnectionsPerAddress: 100_000, attestRate: { perSecond: 1_000_000, burst: 1_000_000 } },
      };
      writeFileSync(file, JSON.stringify({ ...base, ...config }));
      const proc = startServerProcess(dataDir, { args: ["--config", file], env: { SOFTHSM2_CONF: conf } });
      await proc.ready;
      const m = /listening on (https:\/\/\S+) \(admin socket (\S+)\)/.exec(proc.stderr());
      if (!m) throw new Error(`no url in: ${proc.stderr()}`);
      const adminSocket = m[2]!;
      const replica: Replica = {
        name,
        url: m[1]!,
        adminSocket,
        process: proc,
        admin: async (method, path, body) => expectOk(await adminRequest(adminSocket, method, path, body)),
      };
      started.push(replica);
      return replica;
    },
    async query(sql, args = []) {
      return (await db.query(sql, args)).rows;
    },
    async destroy() {
      await Promise.all(started.map((r) => r.process.stop("SIGKILL")));
      await db.end();
      cluster.destroy();
      work.remove();
    },
  };
}
