import type { FastifyBaseLogger, FastifyServerOptions } from "fastify";
import type { Bindings, ChildLoggerOptions } from "pino";

/**
 * How every Hallmark app logs: through the server's pino logger, with fastify's per-request
 * "incoming request"/"request completed" lines off (the audit log and /metrics account for
 * requests), and each request's child logger made only when something writes through it.
 */
export function loggingOptions(log: FastifyBaseLogger): Pick<FastifyServerOptions, "loggerInstance" | "disableRequestLogging" | "childLoggerFactory"> {
  return { loggerInstance: log, disableRequestLogging: true, childLoggerFactory: lazyChild };
}

/**
 * Fastify gives every request a child logger bound to its request id. pino's child() copies the
 * logger and serialises the bindings through the redaction paths, about 1.5% of a JWT-SVID
 * request's CPU in a profile, and Hallmark's own code logs through the app's logger: request.log
 * is written to only by fastify itself, on an error it did not hand to our handlers. So the child
 * is made on first use and every call goes to it; until then the level is the parent's.
 */
function lazyChild(parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  let made: FastifyBaseLogger | undefined;
  const child = () => (made ??= parent.child(bindings, options));
  return {
    get level() {
      // fastify passes level "" when the route sets none: the parent's.
      return made ? made.level : options.level || parent.level;
    },
    set level(level: string) {
      child().level = level;
    },
    fatal: (...args: Parameters<FastifyBaseLogger["fatal"]>) => child().fatal(...args),
    error: (...args: Parameters<FastifyBaseLogger["error"]>) => child().error(...args),
    warn: (...args: Parameters<FastifyBaseLogger["warn"]>) => child().warn(...args),
    info: (...args: Parameters<FastifyBaseLogger["info"]>) => child().info(...args),
    debug: (...args: Parameters<FastifyBaseLogger["debug"]>) => child().debug(...args),
    trace: (...args: Parameters<FastifyBaseLogger["trace"]>) => child().trace(...args),
    silent: (...args: Parameters<FastifyBaseLogger["silent"]>) => child().silent(...args),
    child: (more: Bindings, moreOptions?: ChildLoggerOptions) => child().child(more, moreOptions),
  };
}
