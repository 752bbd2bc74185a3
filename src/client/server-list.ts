import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { HallmarkError, type HallmarkErrorOptions } from "../errors.js";

/**
 * Several Hallmark servers (replicas on one datastore) behind one client: the one place where a
 * client chooses whom to connect to, and fails over. Every client call (attest, node calls, the
 * agent) goes through ApiClient (src/client/http.ts), which sends each request through
 * `ServerList.send`.
 *
 * What moves a request to the next server:
 * - a connection failure (ConnectionFailure): refused, reset, unreachable, no TLS handshake within
 *   the connect timeout, no answer within the answer timeout, the connection lost mid-answer, a
 *   port that does not speak TLS. Hallmark's API calls are safe to repeat on another replica: a
 *   repeated issuance gives a second SVID (both recorded), and a single-use nonce, session or
 *   token refuses its repeat, so nothing is done twice unnoticed;
 * - an HTTP 503 answer (a replica without its datastore, HSM or CA, or shutting down): by the
 *   server's contract a 503 did nothing, and another replica may be able to. When every server
 *   answers 503 (or fails), the caller gets the last 503 answer, with the server's own code.
 * What does not: any other answer (4xx, 500, 429), which is the server's word, and a certificate
 * that does not verify or does not carry the server SPIFFE ID (server_untrusted): an impostor or
 * a stale bundle must be loud, not skipped.
 *
 * Bounded: one request tries each server (each address of a name) at most once, starting with the
 * one that answered last (sticky), then the others in the order given. Longer outages are the
 * caller's to wait out (the agent backs off and tries again).
 */

/** A URL list as given: `--server URL1,URL2,…` (or one URL), or a ServerList to share stickiness. */
export type ServerTarget = string | URL | readonly string[] | ServerList;

/** One place to connect to: a configured URL, at one of its addresses. */
export interface ServerEndpoint {
  /** Where to connect: the URL's origin with the host replaced by one address. */
  readonly origin: URL;
  /** The Host header (and so the TLS server name): the host as configured. */
  readonly host: string;
  /** How messages name it: the URL, and the address when a name resolved to several. */
  readonly label: string;
}

/**
 * The request got no HTTP answer because the way to the server failed: worth trying the next
 * server. `keptAlive` says it failed on a reused kept-alive connection, which the server may
 * have closed just before: that one is retried once on the same server first.
 */
export class ConnectionFailure extends HallmarkError {
  constructor(
    /** Short, for a list of servers: "ECONNREFUSED", "no TLS handshake in 5 s". */
    readonly reason: string,
    readonly keptAlive = false,
    options: HallmarkErrorOptions = {},
  ) {
    super("unavailable", `cannot reach the server: ${reason}`, options);
  }
}

export interface ServerListOptions {
  /**
   * Told once per request that succeeded after others failed: which failed (label and reason)
   * and which answered. The CLI prints one line; the agent logs one warning.
   */
  onFailover?: ((failed: readonly string[], answeredBy: string) => void) | undefined;
  /** How long resolved addresses are reused (default 30 s); a request that finds none reachable resolves again next time. */
  resolveTtlMs?: number | undefined;
}

interface Resolved {
  at: number;
  endpoints: ServerEndpoint[];
  /** URLs whose name did not resolve, with why. */
  unresolved: string[];
}

export class ServerList {
  readonly urls: readonly URL[];
  private preferred: string | undefined;
  private answered: URL | undefined;
  private resolved: Resolved | undefined;
  private resolving: Promise<Resolved> | undefined;

  constructor(
    urls: readonly (string | URL)[],
    private readonly o: ServerListOptions = {},
  ) {
    if (urls.length === 0) throw new HallmarkError("invalid_request", "no server URL given");
    this.urls = urls.map((u) => {
      let url: URL;
      try {
        url = new URL(u);
      } catch {
        throw new HallmarkError("invalid_request", `'${String(u)}' is not a URL`);
      }
      if (url.protocol !== "https:") throw new HallmarkError("invalid_request", "the server URL must be https://");
      return url;
    });
  }

  /** A target as given: a ServerList is shared as is (its stickiness with it); a string may list several URLs, comma-separated. */
  static from(target: ServerTarget, o?: ServerListOptions): ServerList {
    if (target instanceof ServerList) return target;
    if (target instanceof URL) return new ServerList([target], o);
    return new ServerList(typeof target === "string" ? splitServerUrls(target) : target, o);
  }

  /** Whether `url` is on one of the listed servers (an endpoint from discovery may be): then any replica serves it. */
  lists(url: URL): boolean {
    return this.urls.some((u) => u.origin === url.origin);
  }

  /**
   * The server that answered last (else the first listed): where a follow-up that any replica
   * serves alike (a log receipt: replicas share one log) is asked first.
   */
  lastAnswered(): URL {
    return this.answered ?? this.urls[0]!;
  }

  /** The URLs for messages: "https://a:8443, https://b:8443". */
  toString(): string {
    return this.urls.map((u) => u.origin).join(", ");
  }

  /**
   * Sends one request through the servers: `attempt` makes it against one endpoint and throws a
   * ConnectionFailure when it got no answer (see the module comment for what fails over).
   */
  async send<T extends { status: number }>(attempt: (endpoint: ServerEndpoint) => Promise<T>): Promise<T> {
    const { endpoints, unresolved } = await this.endpoints();
    const failed = [...unresolved];
    let lastUnavailable: T | undefined;
    for (const endpoint of this.inTurn(endpoints)) {
      let answer: T;
      try {
        answer = await attempt(endpoint).catch((e: unknown) => {
          // A kept-alive connection the server closed a moment ago is no sign the server is down.
          if (e instanceof ConnectionFailure && e.keptAlive) return attempt(endpoint);
          throw e;
        });
      } catch (e) {
        if (!(e instanceof ConnectionFailure)) throw e;
        failed.push(`${endpoint.label} (${e.reason})`);
        continue;
      }
      if (answer.status === 503) {
        failed.push(`${endpoint.label} (HTTP 503)`);
        lastUnavailable = answer;
        continue;
      }
      if (failed.length > 0) this.o.onFailover?.(failed, endpoint.label);
      this.preferred = endpoint.label;
      this.answered = endpoint.origin;
      return answer;
    }
    // Nothing reachable: the addresses may have changed, so the next request resolves again.
    this.resolved = undefined;
    if (lastUnavailable) return lastUnavailable;
    throw new HallmarkError("unavailable", `cannot reach the server${failed.length > 1 ? "s" : ""}: ${failed.join(", ")}`);
  }

  /** The endpoints starting with the one that answered last, then the others in the order given. */
  private inTurn(endpoints: ServerEndpoint[]): ServerEndpoint[] {
    const i = endpoints.findIndex((e) => e.label === this.preferred);
    return i <= 0 ? endpoints : [...endpoints.slice(i), ...endpoints.slice(0, i)];
  }

  private async endpoints(): Promise<Resolved> {
    const ttl = this.o.resolveTtlMs ?? 30_000;
    if (this.resolved && Date.now() - this.resolved.at < ttl) return this.resolved;
    this.resolving ??= this.resolve().finally(() => (this.resolving = undefined));
    this.resolved = await this.resolving;
    return this.resolved;
  }

  /** Every URL at each of its addresses (an IP literal is its own address). */
  private async resolve(): Promise<Resolved> {
    const endpoints: ServerEndpoint[] = [];
    const unresolved: string[] = [];
    for (const url of this.urls) {
      const name = url.hostname.replace(/^\[|\]$/g, "");
      if (isIP(name) !== 0) {
        endpoints.push({ origin: new URL(url.origin), host: url.host, label: url.origin });
        continue;
      }
      let addresses: Array<{ address: string; family: number }>;
      try {
        addresses = await lookup(name, { all: true, verbatim: true });
      } catch (e) {
        unresolved.push(`${url.origin} (${(e as NodeJS.ErrnoException).code ?? "cannot resolve"})`);
        continue;
      }
      const unique = dedupe(addresses);
      for (const a of unique) {
        const origin = new URL(url.origin);
        origin.hostname = a.family === 6 ? `[${a.address}]` : a.address;
        endpoints.push({ origin, host: url.host, label: unique.length > 1 ? `${url.origin} (${a.address})` : url.origin });
      }
    }
    return { at: Date.now(), endpoints, unresolved };
  }
}

/** `--server URL1,URL2,…`: the URLs, in order, blanks dropped. */
export function splitServerUrls(raw: string): string[] {
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function dedupe<T extends { address: string }>(addresses: T[]): T[] {
  return addresses.filter((a, i) => addresses.findIndex((b) => b.address === a.address) === i);
}
