import { join } from "node:path";
import { afterAll, describe } from "vitest";
import { openPostgresStore } from "../../src/store/postgres/index.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { Store } from "../../src/store/types.js";
import { type PostgresCluster, startPostgresCluster } from "./postgres.js";
import { tempDir } from "./tmp.js";

export const ENGINES = ["sqlite", "postgres"] as const;
export type EngineName = (typeof ENGINES)[number];

export const TEST_POOL = { max: 10, connectionTimeout: 5, idleTimeout: 30, statementTimeout: 30 };

/** One empty database of an engine, opened as often as a test likes (a reopen sees what was written). */
export interface TestDatabase {
  engine: EngineName;
  /** The SQLite file, or the PostgreSQL url. */
  location: string;
  open(options?: { migrate?: boolean }): Promise<Store>;
}

export interface TestEngine {
  name: EngineName;
  /** A new empty database: a file in this test file's temporary directory, or CREATE DATABASE on its cluster. */
  newDatabase(): Promise<TestDatabase>;
}

// One temporary directory and at most one PostgreSQL cluster per test file (modules are per file).
let dir: ReturnType<typeof tempDir> | undefined;
let cluster: Promise<PostgresCluster> | undefined;
let files = 0;
let cleanupRegistered = false;

/** The PostgreSQL cluster of this test file, started at first use and stopped after the file's last test. */
export function fileCluster(): Promise<PostgresCluster> {
  cluster ??= startPostgresCluster();
  return cluster;
}

function engine(name: EngineName): TestEngine {
  return {
    name,
    async newDatabase(): Promise<TestDatabase> {
      if (name === "sqlite") {
        dir ??= tempDir("store-engine");
        const path = join(dir.path, `db-${++files}.db`);
        return { engine: name, location: path, open: (o = {}) => openSqliteStore(path, { migrate: o.migrate }) };
      }
      const url = await (await fileCluster()).createDatabase();
      return { engine: name, location: url, open: (o = {}) => openPostgresStore({ url, pool: TEST_POOL, migrate: o.migrate }) };
    },
  };
}

/** Registers, once per file (call at the top level), the removal of the file's databases and cluster. */
export function registerEngineCleanup(): void {
  if (cleanupRegistered) return;
  cleanupRegistered = true;
  afterAll(async () => {
    if (cluster) (await cluster).destroy();
    dir?.remove();
  });
}

/**
 * The contract suite's shape: `body` runs once per engine, in a describe named after it, so that
 * every repository test holds for SQLite and PostgreSQL alike. Call at the top level of a file.
 */
export function forEachEngine(title: string, body: (engine: TestEngine) => void): void {
  registerEngineCleanup();
  describe.each(ENGINES)(`${title} [%s]`, (name) => body(engine(name)));
}

/** A database of one engine, outside the contract suite (engine-specific tests). */
export function engineFor(name: EngineName): TestEngine {
  registerEngineCleanup();
  return engine(name);
}
