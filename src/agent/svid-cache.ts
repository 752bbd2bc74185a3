import { createPrivateKey, generateKeyPairSync } from "node:crypto";
import type { Logger } from "pino";
import { isHallmarkError } from "../errors.js";
import { pemBlocks } from "../pki/pem.js";
import { type FetchedX509, X509_BATCH_SIZE } from "../client/node.js";
import { sleep } from "./backoff.js";
import { JwtFetchQueue } from "./jwt-fetch-queue.js";
import type { NodeIdentity } from "./node-identity.js";

export interface CachedX509Svid {
  spiffeId: string;
  /** DER, leaf first. */
  certChain: Buffer[];
  /** DER PKCS#8: made in the agent, never sent anywhere but to the workload. */
  privateKey: Buffer;
  /** DER certificates of the trust bundle that came with it. */
  bundle: Buffer[];
  /** Half-life counts from here: notBefore is backdated for lagging clocks. */
  receivedAt: Date;
  expiresAt: Date;
}

export interface CachedJwtSvid {
  spiffeId: string;
  token: string;
  fetchedAt: Date;
  expiresAt: Date;
}

export interface CachedWitSvid {
  spiffeId: string;
  token: string;
  /** The private JWK (with `alg`) whose public half the WIT binds in `cnf.jwk`: made here, handed only to the workload. */
  privateKeyJwk: Record<string, unknown>;
  fetchedAt: Date;
  expiresAt: Date;
}

/** WIT-SVID keys: ES256 on P-256, which the WIT-SVID standard allows and every JOSE library has. */
const WIT_KEY_ALG = "ES256";

export interface SvidCacheOptions {
  /** Hard cap of each cache (X.509 and JWT): the least recently used SVID goes first (default 1000). */
  maxSvids?: number | undefined;
  /** How often renewals are looked for, in ms (default 1000). */
  checkEveryMs?: number | undefined;
  /** Batch requests in flight at once (default 2). */
  concurrency?: number | undefined;
  /** After a failed renewal, the next try of that SVID waits this long (default 2000 ms). */
  retryMs?: number | undefined;
  log: Logger;
  clock?: (() => Date) | undefined;
}

/** A JWT-SVID's cache key: the SPIFFE ID and the audience as a set (order and repeats do not matter). */
const jwtKey = (spiffeId: string, audience: readonly string[]): string => `${spiffeId}\n${[...new Set(audience)].sort().join("\n")}`;

/** Insertion order is recency: a hit moves the key to the end, the first key is evicted at the cap. */
class Lru<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly cap: number) {}
  get(key: string): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }
  set(key: string, v: V): void {
    this.map.delete(key);
    this.map.set(key, v);
    while (this.map.size > this.cap) this.map.delete(this.map.keys().next().value!);
  }
  delete(key: string): boolean {
    return this.map.delete(key);
  }
  keys(): string[] {
    return [...this.map.keys()];
  }
  peek(key: string): V | undefined {
    return this.map.get(key);
  }
  clear(): void {
    this.map.clear();
  }
  get size(): number {
    return this.map.size;
  }
}

/**
 * Workload SVIDs, fetched with the node's SVID and kept in bounded LRU caches: X.509-SVIDs per
 * SPIFFE ID (a fresh key for each, made here), renewed in the background at half their life;
 * JWT-SVIDs per (SPIFFE ID, audience set), fetched on demand (the fetches asked for together go
 * in one batch request) and reused until half their life.
 */
export class SvidCache {
  private readonly x509 : Lru<CachedX509Svid>;
  private readonly jwt: Lru<CachedJwtSvid>;
  private readonly wit: Lru<CachedWitSvid>;
  private readonly inflight = new Map<string, Promise<CachedX509Svid>>();
  /** One fetch per (SPIFFE ID, audience set) at a time, whoever asks. */
  private readonly jwtInflight = new Map<string, Promise<CachedJwtSvid>>();
  private readonly jwtQueue = new JwtFetchQueue((requests) => this.identity.call((c) => c.fetchJwtBatch(requests)));
  private reconciling: Promise<void> = Promise.resolve();
  private readonly retryAt = new Map<string, number>();
  private readonly listeners = new Set<() => void>();
  private readonly stop = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly clock: () => Date;

  constructor(
    private readonly identity: NodeIdentity,
    private readonly o: SvidCacheOptions,
  ) {
    this.x509 = new Lru(o.maxSvids ?? 1000);
    this.jwt = new Lru(o.maxSvids ?? 1000);
    this.wit = new Lru(o.maxSvids ?? 1000);
    this.clock = o.clock ?? (() => new Date());
  }

  /** Fires when an X.509-SVID was renewed. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get x509Count(): number {
    return this.x509.size;
  }

  /** Whether an X.509-SVID for this SPIFFE ID is cached (without touching its recency). */
  holdsX509(spiffeId: string): boolean {
    return this.x509.peek(spiffeId) !== undefined;
  }

  /** The X.509-SVID for this SPIFFE ID: the cached one while before half its life, else a new one. */
  async x509For(spiffeId: string): Promise<CachedX509Svid> {
    const cached = this.x509.get(spiffeId);
    if (cached && !this.pastHalfLife(cached.receivedAt, cached.expiresAt)) return cached;
    try {
      return await this.fetchX509(spiffeId);
    } catch (e) {
      // A renewal that failed (server down): the current SVID serves until it expires.
      if (cached && cached.expiresAt > this.clock()) return cached;
      throw e;
    }
  }

  /** Whether jwtFor would answer without a new request to the server: cached before half its life, or being fetched. */
  holdsJwt(spiffeId: string, audience: readonly string[]): boolean {
    const key = jwtKey(spiffeId, audience);
    return this.freshJwt(key, { touch: false }) !== undefined || this.jwtInflight.has(key);
  }

  /** The cached JWT-SVID before half its life; `touch` marks it used (the LRU keeps it longer). */
  private freshJwt(key: string, o: { touch: boolean }): CachedJwtSvid | undefined {
    const cached = o.touch ? this.jwt.get(key) : this.jwt.peek(key);
    return cached && !this.pastHalfLife(cached.fetchedAt, cached.expiresAt) ? cached : undefined;
  }

  async jwtFor(spiffeId: string, audience: readonly string[]): Promise<CachedJwtSvid> {
    const key = jwtKey(spiffeId, audience);
    const cached = this.freshJwt(key, { touch: true });
    if (cached) return cached;
    let p = this.jwtInflight.get(key);
    if (!p) {
      p = this.jwtQueue
        .fetch({ spiffeId, audience })
        .then((r) => {
          const svid = { spiffeId: r.spiffe_id, token: r.token, fetchedAt: this.clock(), expiresAt: new Date(r.expires_at) };
          this.jwt.set(key, svid);
          return svid;
        })
        .finally(() => this.jwtInflight.delete(key));
      this.jwtInflight.set(key, p);
    }
    return p;
  }

  /**
   * The WIT-SVID for this SPIFFE ID: the cached one before half its life, else one for a new key
   * pair. Once asked for, it is renewed in the background like the X.509-SVIDs, so open
   * FetchWITSVID streams receive the next one before the current one expires.
   */
  async witFor(spiffeId: string): Promise<CachedWitSvid> {
    const cached = this.wit.get(spiffeId);
    if (cached && !this.pastHalfLife(cached.fetchedAt, cached.expiresAt)) return cached;
    try {
      return await this.fetchWit(spiffeId);
    } catch (e) {
      if (cached && cached.expiresAt > this.clock()) return cached;
      throw e;
    }
  }

  /**
   * Keeps only the SVIDs of these SPIFFE IDs (the node's current entries) and fetches missing ones
   * while the cache has room: past the cap, SVIDs are fetched when a workload asks, never by
   * evicting cached ones (which would refetch the whole cache at every entry change).
   */
  reconcile(spiffeIds: ReadonlySet<string>): Promise<void> {
    // One at a time: a reconcile started while another's batches are in flight would count those
    // SVIDs as missing and have the server issue them twice (every entry sync starts one).
    this.reconciling = this.reconciling.catch(() => undefined).then(() => this.reconcileNow(spiffeIds));
    return this.reconciling;
  }

  private async reconcileNow(spiffeIds: ReadonlySet<string>): Promise<void> {
    for (const id of this.x509.keys()) if (!spiffeIds.has(id)) this.x509.delete(id);
    for (const key of this.jwt.keys()) if (!spiffeIds.has(key.slice(0, key.indexOf("\n")))) this.jwt.delete(key);
    for (const id of this.wit.keys()) if (!spiffeIds.has(id)) this.wit.delete(id);
    const room = Math.max(0, (this.o.maxSvids ?? 1000) - this.x509.size);
    const missing = [...spiffeIds].filter((id) => !this.x509.peek(id)).slice(0, room);
    await this.fetchBatches(missing);
  }

  /** Forgets every SVID (the node was removed). */
  clear(): void {
    this.x509.clear();
    this.jwt.clear();
    this.wit.clear();
  }

  startRenewal(): void {
    this.loop = (async () => {
      while (!this.stop.signal.aborted) {
        await sleep(this.o.checkEveryMs ?? 1000, this.stop.signal);
        if (this.stop.signal.aborted || this.identity.removed) return;
        const now = this.clock().getTime();
        const due = this.x509.keys().filter((id) => {
          const s = this.x509.peek(id)!;
          return this.pastHalfLife(s.receivedAt, s.expiresAt) && (this.retryAt.get(id) ?? 0) <= now;
        });
        let renewed = await this.fetchBatches(due);
        for (const id of this.wit.keys()) {
          const w = this.wit.peek(id)!;
          if (!this.pastHalfLife(w.fetchedAt, w.expiresAt) || (this.retryAt.get(`wit\n${id}`) ?? 0) > now) continue;
          renewed += await this.fetchWit(id).then(
            () => 1,
            () => 0,
          );
        }
        if (renewed > 0) for (const l of this.listeners) l();
      }
    })();
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.loop;
  }

  private pastHalfLife(from: Date, to: Date): boolean {
    return this.clock().getTime() >= from.getTime() + (to.getTime() - from.getTime()) / 2;
  }

  /** One fetch per SPIFFE ID at a time, whoever asks (a workload waiting for an SVID not cached). */
  private fetchX509(spiffeId: string): Promise<CachedX509Svid> {
    let p = this.inflight.get(spiffeId);
    if (!p) {
      p = this.identity
        .call((c) => c.fetchX509(spiffeId))
        .then((r) => this.store(spiffeId, r))
        .catch((e: unknown) => {
          this.failed(spiffeId, e);
          throw e;
        })
        .finally(() => this.inflight.delete(spiffeId));
      this.inflight.set(spiffeId, p);
    }
    return p;
  }

  /**
   * Fetches many SVIDs by batches of X509_BATCH_SIZE (one request each, `concurrency` requests at
   * a time), so that a node with thousands of entries does not make thousands of requests.
   * Failures are logged and retried later, never thrown. Returns how many were stored.
   */
  private async fetchBatches(ids: readonly string[]): Promise<number> {
    const chunks: string[][] = [];
    for (let i = 0; i < ids.length; i += X509_BATCH_SIZE) chunks.push(ids.slice(i, i + X509_BATCH_SIZE));
    let stored = 0;
    const worker = async () => {
      for (let chunk = chunks.shift(); chunk && !this.identity.removed; chunk = chunks.shift()) {
        const batch = chunk;
        try {
          const results = await this.identity.call((c) => c.fetchX509Batch(batch));
          results.forEach((r, i) => {
            if (r instanceof Error) this.failed(batch[i]!, r);
            else {
              this.store(batch[i]!, r);
              stored++;
            }
          });
        } catch (e) {
          for (const id of batch) this.failed(id, e);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.o.concurrency ?? 2, chunks.length) }, worker));
    return stored;
  }

  private async fetchWit(spiffeId: string): Promise<CachedWitSvid> {
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    try {
      const r = await this.identity.call((c) => c.fetchWit({ ...publicKey.export({ format: "jwk" }), alg: WIT_KEY_ALG }, spiffeId));
      const svid: CachedWitSvid = {
        spiffeId: r.spiffe_id,
        token: r.token,
        privateKeyJwk: { ...privateKey.export({ format: "jwk" }), alg: WIT_KEY_ALG },
        fetchedAt: this.clock(),
        expiresAt: new Date(r.expires_at),
      };
      this.retryAt.delete(`wit\n${spiffeId}`);
      this.wit.set(spiffeId, svid);
      return svid;
    } catch (e) {
      this.failed(`wit\n${spiffeId}`, e);
      throw e;
    }
  }

  private store(spiffeId: string, r: FetchedX509): CachedX509Svid {
    const svid: CachedX509Svid = {
      spiffeId: r.spiffeId,
      certChain: pemBlocks(r.certChainPem),
      privateKey: createPrivateKey(r.privateKeyPem).export({ format: "der", type: "pkcs8" }),
      bundle: pemBlocks(r.bundlePem),
      receivedAt: this.clock(),
      expiresAt: new Date(r.expiresAt),
    };
    this.retryAt.delete(spiffeId);
    this.x509.set(spiffeId, svid);
    return svid;
  }

  private failed(spiffeId: string, e: unknown): void {
    this.retryAt.set(spiffeId, this.clock().getTime() + (this.o.retryMs ?? 2000));
    this.o.log.warn({ spiffeId, code: isHallmarkError(e) ? e.code : "error", detail: (e as Error).message }, "agent: workload SVID fetch failed");
  }
}
