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
  return new LazyChildLogger(parent, bindings, options);
}

/** Methods on the prototype: a request allocates one small object, not a closure per method. */
class LazyChildLogger implements FastifyBaseLogger {
  private made: FastifyBaseLogger | undefined;

  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  private get real(): FastifyBaseLogger {
    return (this.made ??= this.parent.child(this.bindings, this.options));
  }

  get level(): string {
    // fastify passes level "" when the route sets none: the parent's.
    return this.made ? this.made.level : this.options.level || this.parent.level;
  }

  set level(level: string) {
    this.real.level = level;
  }

  fatal(...args: Parameters<FastifyBaseLogger["fatal"]>): void {
    this.real.fatal(...args);
  }

  error(...args: Parameters<FastifyBaseLogger["error"]>): void {
    this.real.error(...args);
  }

  warn(...args: Parameters<FastifyBaseLogger["warn"]>): void {
    this.real.warn(...args);
  }

  info(...args: Parameters<FastifyBaseLogger["info"]>): void {
    this.real.info(...args);
  }

  debug(...args: Parameters<FastifyBaseLogger["debug"]>): void {
    this.real.debug(...args);
  }

  trace(...args: Parameters<FastifyBaseLogger["trace"]>): void {
    this.real.trace(...args);
  }

  silent(...args: Parameters<FastifyBaseLogger["silent"]>): void {
    this.real.silent(...args);
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.real.child(bindings, options);
  }
}
