import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { HallmarkError } from "../errors.js";
import { openPostgresStore } from "./postgres/index.js";
import { openSqliteStore } from "./sqlite/index.js";
import type { Store } from "./types.js";

/** The `store` section of the server configuration (src/config/server.ts), and where SQLite's file lives. */
export interface StoreSettings {
  dataDir: string;
  store: {
    driver: "sqlite" | "postgres";
    url?: string | undefined;
    passwordFile?: string | undefined;
    migrate: boolean;
    pool: { max: number; connectionTimeout: number; idleTimeout: number; statementTimeout: number };
  };
}

export interface OpenStoreOptions {
  log?: Logger | undefined;
  /** Read only: no migration, no write (audit verification, forensics). */
  readonly?: boolean | undefined;
}

/** The SQLite database of a data directory. */
export function sqliteDatabasePath(dataDir: string): string {
  return join(dataDir, "hallmark.db");
}

/** One place where the configured engine is chosen: the server, its audit worker and the CLI open the datastore through here. */
export async function openStore(s: StoreSettings, o: OpenStoreOptions = {}): Promise<Store> {
  if (s.store.driver === "sqlite") {
    return openSqliteStore(sqliteDatabasePath(s.dataDir), { log: o.log, readonly: o.readonly, migrate: s.store.migrate });
  }
  return openPostgresStore({
    url: s.store.url!,
    password: s.store.passwordFile ? readPasswordFile(s.store.passwordFile) : undefined,
    pool: s.store.pool,
    readonly: o.readonly,
    migrate: s.store.migrate,
    log: o.log,
  });
}

/** The password file's first line; the path may be named in errors, the content never. */
function readPasswordFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new HallmarkError("config_invalid", `store.passwordFile: cannot read ${path}`);
  }
  const password = text.split(/\r?\n/)[0] ?? "";
  if (!password) throw new HallmarkError("config_invalid", `store.passwordFile: ${path} is empty`);
  return password;
}
