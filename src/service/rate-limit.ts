import type { AuditLog } from "../audit/log.js";
import { AUDIT_EVENTS } from "./audit-events.js";
import type { Clock } from "./clock.js";
import type { Metrics } from "./metrics.js";
import { type TakeResult, TokenBuckets } from "./token-buckets.js";

/** Where refusals from addresses beyond the tally's bound are counted: every refusal is still accounted for. */
export const OTHER_ADDRESSES = "other-addresses";

interface Tally {
  count: number;
  routes: Record<string, number>;
}

/**
 * The per-address rate limit of the anonymous attestation endpoints, and its audit trail. A
 * refused request is counted (a metric, and a tally per address) rather than written to the audit
 * log one by one, so that one client cannot write megabytes of refusals; `flush` turns the tally
 * into one `rate_limited_summary` record per address and window. The tally is bounded like the
 * buckets: addresses beyond `maxKeys` in one window share one summary.
 */
export class AnonymousRateLimit {
  private readonly buckets: TokenBuckets;
  private tallies = new Map<string, Tally>();
  private windowStart: Date;

  constructor(
    private readonly o: {
      perSecond: number;
      burst: number;
      maxKeys: number;
      audit: AuditLog;
      metrics: Metrics;
      clock: Clock;
    },
  ) {
    this.buckets = new TokenBuckets({ perSecond: o.perSecond, burst: o.burst, maxKeys: o.maxKeys, now: () => o.clock().getTime() });
    this.windowStart = o.clock();
  }

  /** `address` is the client's address key; `route` the route pattern, for the metric and the summary. */
  admit(address: string, route: string): TakeResult {
    const r = this.buckets.take(address);
    if (r.ok) return r;
    this.o.metrics.rateLimited(route);
    this.merge(address, { count: 1, routes: { [route]: 1 } });
    return r;
  }

  private merge(address: string, add: Tally): void {
    const key = this.tallies.has(address) || this.tallies.size < this.o.maxKeys ? address : OTHER_ADDRESSES;
    const t = this.tallies.get(key) ?? { count: 0, routes: {} };
    t.count += add.count;
    for (const [route, n] of Object.entries(add.routes)) t.routes[route] = (t.routes[route] ?? 0) + n;
    this.tallies.set(key, t);
  }

  /** Writes one summary record per address refused since the last flush; returns how many. */
  async flush(): Promise<number> {
    const windowEnd = this.o.clock();
    const tallies = this.tallies;
    const written = tallies.size;
    const windowStart = this.windowStart;
    this.tallies = new Map();
    this.windowStart = windowEnd;
    for (const [address, t] of tallies) {
      try {
        await this.o.audit.append({
          time: windowEnd,
          event: AUDIT_EVENTS.rateLimitedSummary,
          outcome: "refused",
          code: "rate_limited",
          actor: address === OTHER_ADDRESSES ? OTHER_ADDRESSES : `peer:${address}`,
          details: { count: t.count, routes: t.routes, windowStart: windowStart.toISOString(), windowEnd: windowEnd.toISOString() },
        });
        tallies.delete(address);
      } catch (e) {
        // Not written: fold what is left back into the open window, so the next flush accounts for it.
        this.windowStart = windowStart;
        for (const [a, left] of tallies) this.merge(a, left);
        throw e;
      }
    }
    return written;
  }
}
