import { HallmarkError } from "../errors.js";

/** Certificates are backdated so that a relying party whose clock lags a little still accepts them. */
export const BACKDATE_SECONDS = 10;

/** A century: beyond any sane certificate, well inside what Date and UTCTime/GeneralizedTime hold. */
const MAX_TTL_SECONDS = 100 * 365 * 86400;

/** A TTL must be a whole, positive number of seconds, at most `max`. */
export function requireTtl(ttlSeconds: number, max = MAX_TTL_SECONDS): void {
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds <= 0 || ttlSeconds > max) {
    throw new HallmarkError("ttl_invalid", `the TTL must be a whole number of seconds between 1 and ${max}`);
  }
}
