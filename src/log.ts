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
