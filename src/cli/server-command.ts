import { loadServerConfig } from "../config/server.js";
import { createLogger } from "../log.js";
import { type Command, optionalString } from "./args.js";

export const serverCommand: Command = {
  name: "server",
  summary: "run the Hallmark server (HTTPS API + local admin socket)",
  usage: "hallmark server [--config FILE] [--data-dir DIR] [--listen HOST:PORT] [--trust-domain TD]",
  options: {
    config: { type: "string" },
    "data-dir": { type: "string" },
    listen: { type: "string" },
    "trust-domain": { type: "string" },
  },
  async run(v) {
    const config = loadServerConfig({
      config: optionalString(v, "config"),
      dataDir: optionalString(v, "data-dir"),
      listen: optionalString(v, "listen"),
      trustDomain: optionalString(v, "trust-domain"),
    });
    const log = createLogger(config.log.level);
    // Loaded only here: client and admin commands never load the PKCS#11 module or the database.
    const { startServer } = await import("../server/run.js");
    const server = await startServer(config, log);
    console.error(`hallmark server listening on ${server.url} (admin socket ${server.adminSocket})`);
    if (server.webBundleUrl) console.error(`hallmark federation bundle endpoint (https_web) at ${server.webBundleUrl}`);
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        log.info({ signal }, "shutting down");
        resolve();
      };
      process.once("SIGINT", () => stop("SIGINT"));
      process.once("SIGTERM", () => stop("SIGTERM"));
    });
    await server.close();
    return 0;
  },
};
