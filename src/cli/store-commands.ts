import { statSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadServerConfig } from "../config/server.js";
import { type Command, UsageError, optionalString, requireString } from "./args.js";

const CONFIG = { type: "string", value: "FILE", description: "the server's configuration file (its store section; HALLMARK_STORE_URL applies too)" } as const;

/** The SQLite database named by `sqlite:PATH`: the file, or hallmark.db in a data directory. */
function sqliteSource(from: string): string {
  if (!from.startsWith("sqlite:")) throw new UsageError("--from must be sqlite:PATH (a database file or a data directory)");
  const path = resolve(from.slice("sqlite:".length));
  try {
    return statSync(path).isDirectory() ? join(path, "hallmark.db") : path;
  } catch {
    return path;
  }
}

/** `hallmark store migrate|copy`: the datastore's schema and moving a deployment from SQLite to PostgreSQL. */
export const storeCommands: Command[] = [
  {
    name: "store migrate",
    summary: "bring the configured datastore's schema to this hallmark's version (servers started with --no-migrate need it)",
    options: { config: CONFIG, "data-dir": { type: "string", value: "DIR", description: "the data directory (SQLite's database is DIR/hallmark.db)" } },
    async run(v) {
      const config = loadServerConfig({ config: optionalString(v, "config"), dataDir: optionalString(v, "data-dir") });
      // Loaded only here: other commands never load the database drivers.
      const { openStore } = await import("../store/open.js");
      const { KNOWN_SCHEMA_VERSION } = await import("../store/sqlite/schema.js");
      const store = await openStore({ ...config, store: { ...config.store, migrate: true } });
      await store.close();
      console.log(`datastore (${config.store.driver}) at schema version ${KNOWN_SCHEMA_VERSION}`);
      return 0;
    },
  },
  {
    name: "store copy",
    summary: "copy a SQLite datastore (stop its server first) into an empty PostgreSQL database, audit history included",
    options: {
      from: { type: "string", value: "sqlite:PATH", required: true, description: "the SQLite database file, or a data directory holding hallmark.db" },
      to: { type: "string", value: "postgres://USER@HOST:PORT/DB", required: true, description: "the empty target database (created tables included); refused when it holds any row" },
      "to-password-file": { type: "string", value: "FILE", description: "the target's password (first line), instead of in the url" },
      json: { type: "boolean", description: "print the report as JSON" },
    },
    async run(v) {
      const from = sqliteSource(requireString(v, "from"));
      const to = requireString(v, "to");
      if (!/^postgres(ql)?:\/\//.test(to)) throw new UsageError("--to must be a postgres:// URL");
      const passwordFile = optionalString(v, "to-password-file");
      const { copySqliteToPostgres } = await import("../store/copy.js");
      const { verifyStoredAuditChain } = await import("../audit/stored-chain.js");
      const { redactUrl } = await import("../store/postgres/connection.js");
      const { serverConfigSchema } = await import("../config/server.js");
      const store = serverConfigSchema.shape.store.parse({ url: to, ...(passwordFile ? { passwordFile } : {}) });
      const { readPasswordFile } = await import("../store/open.js");
      const report = await copySqliteToPostgres(from, { url: to, password: passwordFile ? readPasswordFile(passwordFile) : undefined });
      // The target read back, as a server would: the chain and the tree must verify there.
      const check = await verifyStoredAuditChain({ dataDir: ".", store });
      const rows = Object.entries(report.tables).map(([t, n]) => `  ${t.padEnd(22)} ${n}`);
      if (v.json) console.log(JSON.stringify({ from, to: redactUrl(to), ...report, audit: check }, null, 2));
      else {
        console.log([`copied ${from} to ${redactUrl(to)} (schema version ${report.schemaVersion}):`, ...rows].join("\n"));
        console.log(check.ok ? `audit log verified on the target: ${check.records} records, head ${check.head}` : `audit log on the target BROKEN at record ${check.brokenAt}: ${check.reason}`);
      }
      return check.ok ? 0 : 1;
    },
  },
];
