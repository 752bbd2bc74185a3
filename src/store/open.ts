import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import { type ServerConfig, databasePath, serverConfigSchema } from "../config/server.js";
import { HallmarkError } from "../errors.js";
import type { ProcessCoordination } from "./change-feed.js";
import { openSqliteStore } from "./sqlite/index.js";
import type { Store } from "./types.js";

/** The `store` section of the server configuration, and the data directory (where SQLite's file lives). */
export type StoreSettings = Pick<ServerConfig, "dataDir" | "store">;

export interface OpenStoreOptions {
  log?: Logger | undefined;
  /** Read only: no migration, no write (audit verification, forensics). */
  readonly?: boolean | undefined;
  /**
   * SQLite only: how committed writes are announced and locks held (see ProcessCoordination);
   * PostgreSQL's NOTIFY and advisory locks already reach every process.
   */
  coordination?: ProcessCoordination | undefined;
}

/** The embedded SQLite database of a data directory, with migrations on: what `--data-dir` alone means. */
export function sqliteStoreOf(dataDir: string): StoreSettings {
  return { dataDir, store: { driver: "sqlite", migrate: true, pool: serverConfigSchema.shape.store.parse(undefined).pool } };
}

/** One place where the configured engine is chosen: the server, its audit worker and the CLI open the datastore through here. */
export async function openStore(s: StoreSettings, o: OpenStoreOptions = {}): Promise<Store> {
  if (s.store.driver === "sqlite") {
    return openSqliteStore(databasePath(s), { log: o.log, readonly: o.readonly, migrate: s.store.migrate, coordination: o.coordination });
  }
  // Loaded only when configured: SQLite deployments and the CLI's other commands never load pg.
  const { openPostgresStore } = await import("./postgres/index.js");
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
export function readPasswordFile(path: string): string {
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
