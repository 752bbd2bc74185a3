/**
 * One token bucket per key (a client address, a node): `burst` tokens at most, refilled at `perSecond`.
 * The map is bounded: past `maxKeys`, the least recently seen key is forgotten (a Map iterates in
 * insertion order, and every take re-inserts its key), so the limiter itself cannot be grown
 * without bound by callers from many addresses. A forgotten key starts again with a full bucket,
 * which is the price of the bound: size `maxKeys` well above the addresses active at once.
 */
export type TakeResult = { ok: true } | { ok: false; retryAfterSeconds: number };

interface Bucket {
  tokens: number;
  /** Milliseconds (clock time) when `tokens` was last computed. */
  at: number;
}

export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly o: { perSecond: number; burst: number; maxKeys: number; now?: () => number },
  ) {}

  /** Takes `cost` tokens (a batch of SVIDs costs one each), or none if the bucket holds fewer. */
  take(key: string, cost = 1): TakeResult {
    const now = this.o.now?.() ?? Date.now();
    const b = this.buckets.get(key);
    // A clock stepped back (NTP) refills nothing and must not drain the bucket either.
    const bucket: Bucket = b
      ? { tokens: Math.min(this.o.burst, b.tokens + (Math.max(0, now - b.at) / 1000) * this.o.perSecond), at: Math.max(b.at, now) }
      : { tokens: this.o.burst, at: now };
    this.buckets.delete(key);
    this.buckets.set(key, bucket);
    if (this.buckets.size > this.o.maxKeys) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
    if (bucket.tokens >= cost) {
      bucket.tokens -= cost;
      return { ok: true };
    }
    return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((cost - bucket.tokens) / this.o.perSecond)) };
  }

  /** Keys currently remembered (never more than maxKeys). */
  get size(): number {
    return this.buckets.size;
  }
}
