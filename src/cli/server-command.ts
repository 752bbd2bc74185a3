import cluster from "node:cluster";
import { ENV_OVERRIDES, loadServerConfig, serverConfigSchema } from "../config/server.js";
import { createLogger } from "../log.js";
import { softHsmAutoInitNotice, softHsmAutoInitInUse } from "../server/dev-notice.js";
import { type Command, UsageError, optionalString } from "./args.js";

/** The schema's own defaults, so help never states a default the server does not apply. */
const DEFAULTS = serverConfigSchema.parse({});

/** The environment variable that sets a config field (see ENV_OVERRIDES). */
function envFor(field: string): string | undefined {
  return Object.entries(ENV_OVERRIDES).find(([, f]) => f === field)?.[0];
}

export const serverCommand: Command = {
  name: "server",
  summary: "run the Hallmark server (HTTPS API + local admin socket)",
  options: {
    config: { type: "string", value: "FILE", description: "YAML or JSON configuration file (see the README's configuration section)", default: "none: built-in defaults" },
    "data-dir": {
      type: "string",
      value: "DIR",
      description: "where the SQLite database (store.driver sqlite), the admin socket and the development SoftHSM2 token live",
      default: DEFAULTS.dataDir,
      env: envFor("dataDir"),
    },
    listen: { type: "string", value: "HOST:PORT", description: "HTTPS address of the API (port 0: any free port)", default: DEFAULTS.listen, env: envFor("listen") },
    "no-migrate": { type: "boolean", description: "do not migrate the datastore's schema at start: refuse to start (store_schema_behind) when it is behind ('hallmark store migrate' does it)" },
    workers: {
      type: "string",
      value: "N",
      description: "processes serving the API on one port, sharing the HSM token and the datastore (see the README: several processes)",
      default: String(DEFAULTS.workers),
    },
    "trust-domain": { type: "string", value: "TD", description: "the SPIFFE trust domain this server issues for", default: DEFAULTS.trustDomain, env: envFor("trustDomain") },
  },
  notes: () => [
    "A flag beats its environment variable, which beats the config file.",
    "",
    "environment:",
    ...Object.entries(ENV_OVERRIDES).map(([env, field]) => `  ${env.padEnd(26)}  sets ${field}`),
    `  ${DEFAULTS.hsm.pinEnv.padEnd(26)}  the HSM user PIN (the variable is hsm.pinEnv; or hsm.pinFile)`,
    "",
    `Without hsm.modulePath the server creates a SoftHSM2 token under DIR/softhsm with generated PINs:`,
    "a development default, announced on stderr at start.",
  ],
  async run(v) {
    const config = loadServerConfig({
      config: optionalString(v, "config"),
      dataDir: optionalString(v, "data-dir"),
      listen: optionalString(v, "listen"),
      trustDomain: optionalString(v, "trust-domain"),
      noMigrate: v["no-migrate"] === true,
      workers: workersFlag(v),
    });
    const log = createLogger(config.log.level);
    // Loaded only here: client and admin commands never load the PKCS#11 module or the database.
    if (cluster.isWorker) {
      const { runWorker } = await import("../server/workers/worker.js");
      return runWorker(config, log);
    }
    let server: { url: string; adminSocket: string; webBundleUrl?: string | undefined; close(): Promise<number | void> };
    let gaveUp: Promise<number> = new Promise(() => undefined);
    if (config.workers > 1) {
      const { startWorkersPrimary, WorkersStartFailed } = await import("../server/workers/primary.js");
      try {
        const group = await startWorkersPrimary(config, config.workers, log);
        server = { ...group, close: () => group.stop() };
        console.error(`hallmark server: ${config.workers} workers (pids ${group.workerPids().join(" ")})`);
        gaveUp = group.done;
      } catch (e) {
        if (e instanceof WorkersStartFailed) return e.exitCode;
        throw e;
      }
    } else {
      const { startServer } = await import("../server/run.js");
      server = await startServer(config, log);
    }
    // Handlers first: whoever reads the "listening" line may send SIGTERM at once, and an
    // unhandled SIGTERM would kill the process without closing the store and the HSM.
    const stopped = new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        log.info({ signal }, "shutting down");
        resolve();
      };
      process.once("SIGINT", () => stop("SIGINT"));
      process.once("SIGTERM", () => stop("SIGTERM"));
    });
    if (softHsmAutoInitInUse(config)) console.error(softHsmAutoInitNotice(config));
    // This line's format is read by scripts, the tests and the benchmarks: one line, whatever the workers.
    console.error(`hallmark server listening on ${server.url} (admin socket ${server.adminSocket})`);
    if (server.webBundleUrl) console.error(`hallmark federation bundle endpoint (https_web) at ${server.webBundleUrl}`);
    // A group ends on a signal, or by itself when a worker keeps dying at start (said on stderr).
    const code = await Promise.race([stopped.then(() => undefined), gaveUp]);
    if (code !== undefined) {
      console.error(`hallmark: unavailable: a worker kept exiting before it could serve (see the log); the server stopped`);
      return code || 1;
    }
    return (await server.close()) ?? 0;
  },
};

/** `--workers N`: a whole number from 1; the schema checks the upper bound. */
function workersFlag(v: Record<string, unknown>): number | undefined {
  const raw = optionalString(v, "workers");
  if (raw === undefined) return undefined;
  if (!/^[0-9]+$/.test(raw) || Number(raw) < 1) throw new UsageError(`--workers: '${raw}' is not a whole number from 1`);
  return Number(raw);
}
