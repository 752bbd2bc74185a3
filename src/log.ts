import pino, { type Logger } from "pino";

/**
 * Redaction paths for every logger Hallmark makes: secrets (PINs, join tokens, private keys,
 * authorization headers) and raw evidence never reach a log line, whatever object is logged.
 */
export const REDACT_PATHS = [
  "pin",
  "*.pin",
  "soPin",
  "*.soPin",
  "token",
  "*.token",
  "*.*.token",
  "privateKey",
  "*.privateKey",
  "key",
  "*.key",
  "evidence",
  "*.evidence",
  "secret",
  "*.secret",
  "req.headers.authorization",
  "req.headers.cookie",
  'req.headers["x-hallmark-token"]',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level, redact: { paths: REDACT_PATHS, censor: "[redacted]" }, base: { service: "hallmark" } }, destination);
}

/**
 * How a background task reports its failures: a datastore outage (store_unavailable) once per
 * outage, at warn, without a stack (the store logs the cause, and a task retrying every second
 * must not fill the log); any other failure in full, every time.
 */
export function taskFailureLog(log: Logger, message: string): { failed(e: unknown, fields?: Record<string, unknown>): void; succeeded(): void } {
  let inOutage = false;
  return {
    failed(e, fields = {}) {
      if ((e as { code?: unknown } | null)?.code === "store_unavailable") {
        if (!inOutage) log.warn({ ...fields, code: "store_unavailable" }, `${message}: the datastore is unavailable; retrying quietly until it answers`);
        inOutage = true;
        return;
      }
      log.error({ ...fields, err: e }, message);
    },
    succeeded() {
      inOutage = false;
    },
  };
}
