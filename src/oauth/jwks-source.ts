import { stat } from "node:fs/promises";
import { type JWK, type JWTVerifyGetKey, createLocalJWKSet } from "jose";
import { HallmarkError } from "../errors.js";
import { readInputText } from "../input-file.js";
import { errnoReason } from "../system-error.js";
import { PRIVATE_JWK_MEMBERS } from "../issuer/wit-svid.js";
import { boundedRequest } from "../client/bounded-request.js";

/**
 * Key sets of trusted token issuers, from configuration only: a JWKS file (read at start and again
 * whenever it changes) or a JWKS URL fetched over HTTPS with the configured roots. Never a URL or
 * key a token names itself (`iss`, `jku`, `x5u`, `jwk`): whoever signs a token would then also
 * choose the key it is checked with.
 */

/** A JWKS is a few keys; 256 KiB and 64 keys bound what a hostile or broken endpoint can make us parse. */
export const JWKS_MAX_BYTES = 256 * 1024;
const JWKS_MAX_KEYS = 64;
export const JWKS_FETCH_TIMEOUT_MS = 5000;
/** An unknown kid triggers at most one refetch per 30 s: tokens with made-up kids cannot make us hammer the issuer. */
export const UNKNOWN_KID_REFETCH_MS = 30_000;

export type FetchJwks = (uri: string, o: { ca?: string | undefined; timeoutMs: number; maxBytes: number }) => Promise<unknown>;

export interface KeySource {
  /** The keys to verify with at `now` (refreshed first if they are older than the refresh period). */
  keys(now: Date): Promise<JWTVerifyGetKey>;
  /** After a token named a kid the keys lack: fetch again if allowed (rate-limited); true when the keys changed. */
  refreshForUnknownKid(now: Date): Promise<boolean>;
}

/** The keys of a JWKS document, checked: an object with 1..64 keys, each public (a private member refuses the whole set: it was published by mistake). */
export function parseJwks(doc: unknown, where: string): { keys: JWK[] } {
  const keys = (doc as { keys?: unknown } | null)?.keys;
  if (typeof doc !== "object" || doc === null || !Array.isArray(keys) || keys.length === 0 || keys.length > JWKS_MAX_KEYS) {
    throw new Error(`${where} is not a JWKS with 1 to ${JWKS_MAX_KEYS} keys`);
  }
  for (const k of keys) {
    if (typeof k !== "object" || k === null || Array.isArray(k)) throw new Error(`${where} has a key that is not a JSON object`);
    if (PRIVATE_JWK_MEMBERS.some((m) => m in k)) throw new Error(`${where} has a key with private members: publish public keys only`);
  }
  return { keys: keys as JWK[] };
}

const keysUnavailable = (issuer: string, why: string, cause?: unknown) =>
  new HallmarkError("unavailable", `the keys of subject issuer ${issuer} cannot be loaded`, { internal: why, cause });

/** A JWKS file: stat'ed on each use (microseconds), read again when its identity, size or time changed. */
export class FileKeySource implements KeySource {
  private loaded: { stamp: string; getKey: JWTVerifyGetKey } | undefined;
  private lastWarning: string | undefined;
  /** A version of the file that did not parse: not read again until it changes. */
  private badStamp: string | undefined;

  constructor(
    private readonly issuer: string,
    private readonly path: string,
    private readonly field: string,
    /** Hears when the file could not be read again and the keys read last stay in use. */
    private readonly warn: (message: string) => void = () => undefined,
  ) {}

  async keys(): Promise<JWTVerifyGetKey> {
    let stamp: string;
    try {
      const s = await stat(this.path);
      stamp = `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
    } catch (e) {
      // The file went away (a deploy half-done): the keys read last stay in use.
      if (this.loaded) {
        return this.keepLoaded(errnoReason(e));
      }
      throw keysUnavailable(this.issuer, `${this.field}: ${(e as Error).message}`, e);
    }
    if (this.loaded?.stamp === stamp) return this.loaded.getKey;
    if (this.loaded && stamp === this.badStamp) return this.loaded.getKey;
    try {
      const text = readInputText(this.path, this.field);
      this.loaded = { stamp, getKey: createLocalJWKSet(parseJwks(JSON.parse(text), `${this.field} (${this.path})`)) };
    } catch (e) {
      // A file caught mid-write, or broken: keep the keys read last; with none, refuse.
      if (this.loaded) {
        this.badStamp = stamp;
        return this.keepLoaded((e as Error).message);
      }
      throw keysUnavailable(this.issuer, (e as Error).message, e);
    }
    this.lastWarning = undefined;
    return this.loaded.getKey;
  }

  /** Once per distinct reason, not once per token. */
  private keepLoaded(reason: string): JWTVerifyGetKey {
    const message = `${this.field}: ${reason}: the keys read last stay in use`;
    if (message !== this.lastWarning) this.warn((this.lastWarning = message));
    return (this.loaded as { getKey: JWTVerifyGetKey }).getKey;
  }

  async refreshForUnknownKid(): Promise<boolean> {
    // keys() already looked at the file for this token.
    return false;
  }
}

/**
 * A JWKS URL: fetched on first use, again once the keys are `refreshSeconds` old (they are
 * never used older: a key the issuer withdrew stops being trusted within that period), and
 * again on an unknown kid at most every 30 s (the issuer rotated). Concurrent callers share
 * one fetch.
 */
export class RemoteKeySource implements KeySource {
  private loaded: { at: number; getKey: JWTVerifyGetKey } | undefined;
  private inflight: Promise<JWTVerifyGetKey> | undefined;
  private ca: string | undefined;

  constructor(
    private readonly o: { issuer: string; uri: string; caFile?: string | undefined; field: string; refreshSeconds: number; fetchJwks: FetchJwks },
  ) {
    // The roots are read at start: a missing caFile is a configuration error, said at once.
    if (o.caFile !== undefined) this.ca = readInputText(o.caFile, `${o.field}.caFile`);
  }

  async keys(now: Date): Promise<JWTVerifyGetKey> {
    if (this.loaded && now.getTime() - this.loaded.at < this.o.refreshSeconds * 1000) return this.loaded.getKey;
    return this.fetch(now);
  }

  async refreshForUnknownKid(now: Date): Promise<boolean> {
    // Counted from the last fetch of any kind: keys fetched a moment ago are the issuer's current ones.
    if (this.loaded && now.getTime() - this.loaded.at < UNKNOWN_KID_REFETCH_MS) return false;
    const before = this.loaded?.getKey;
    return (await this.fetch(now)) !== before;
  }

  private fetch(now: Date): Promise<JWTVerifyGetKey> {
    this.inflight ??= (async () => {
      try {
        const doc = await this.o.fetchJwks(this.o.uri, { ca: this.ca, timeoutMs: JWKS_FETCH_TIMEOUT_MS, maxBytes: JWKS_MAX_BYTES });
        this.loaded = { at: now.getTime(), getKey: createLocalJWKSet(parseJwks(doc, this.o.uri)) };
        return this.loaded.getKey;
      } catch (e) {
        throw keysUnavailable(this.o.issuer, `${this.o.uri}: ${(e as Error).message}`, e);
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }
}

/**
 * GET a JWKS over HTTPS: the server's certificate must chain to `ca` (default: the system roots)
 * and name the URL's host; no redirects; 200 and JSON only; at most `maxBytes`, within `timeoutMs`
 * in all (a server that drips bytes is cut off too).
 */
export const fetchJwksOverHttps: FetchJwks = async (uri, o) => {
  const a = await boundedRequest(new URL(uri), {
    accept: "application/jwk-set+json, application/json",
    tls: o.ca === undefined ? undefined : { ca: o.ca },
    maxBytes: o.maxBytes,
    timeoutMs: o.timeoutMs,
    tooLarge: () => new Error(`the JWKS is larger than ${o.maxBytes} bytes`),
  });
  if (a.status !== 200) throw new Error(`HTTP ${a.status}`);
  try {
    return JSON.parse(a.body.toString("utf8")) as unknown;
  } catch {
    throw new Error("the JWKS is not JSON");
  }
};
