import type { AuditLog } from "../audit/log.js";
import { isHallmarkError } from "../errors.js";
import { AUDIT_EVENTS } from "./audit-events.js";
import type { Clock } from "./clock.js";
import type { Metrics } from "./metrics.js";
import { type TakeResult, TokenBuckets } from "./token-buckets.js";

/** Where refusals from addresses beyond the tally's bound are counted: every refusal is still accounted for. */
export const OTHER_ADDRESSES = "other-addresses";
/** The same for nodes beyond the bound of the per-node issuance limit, and for OAuth clients. */
export const OTHER_NODES = "other-nodes";
export const OTHER_CLIENTS = "other-clients";

interface Tally {
  count: number;
  routes: Record<string, number>;
}

/** A refusal past a RateLimit's allowance: its summary accounts for it, so nobody audits it again. */
export const isRateLimited = (e: unknown): boolean => isHallmarkError(e) && e.code === "rate_limited";

/** Whose allowance a RateLimit keeps, and how its summaries name them. */
export interface RateLimitSubject {
  /** The audit actor of a key's summary: `peer:<address>`, or the node's SPIFFE ID. */
  actorOf(key: string): string;
  /** The key (and actor) under which refusals beyond `maxKeys` keys in one window are summed. */
  others: string;
}

/** Anonymous callers, by address key (src/api/address-key.ts). */
export const BY_ADDRESS: RateLimitSubject = { actorOf: (address) => `peer:${address}`, others: OTHER_ADDRESSES };
/** Authenticated nodes, by SPIFFE ID: the actor of their issuance records too. */
export const BY_NODE: RateLimitSubject = { actorOf: (spiffeId) => spiffeId, others: OTHER_NODES };
/** Authenticated OAuth clients, by client_id (a workload's SPIFFE ID): the actor of their records too. */
export const BY_CLIENT: RateLimitSubject = { actorOf: (clientId) => clientId, others: OTHER_CLIENTS };

/**
 * A token bucket per key (the anonymous attestation endpoints' per-address limit, the per-node
 * issuance limit), and its audit trail. A refused request is counted (a metric, and a tally per
 * key) rather than written to the audit log one by one, so that one client cannot write megabytes
 * of refusals; `flush` turns the tally into one `rate_limited_summary` record per key and window.
 * The tally is bounded like the buckets: keys beyond `maxKeys` in one window share one summary.
 */
export class RateLimit {
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
      subject: RateLimitSubject;
    },
  ) {
    this.buckets = new TokenBuckets({ perSecond: o.perSecond, burst: o.burst, maxKeys: o.maxKeys, now: () => o.clock().getTime() });
    this.windowStart = o.clock();
  }

  /**
   * `key` is the client's address key or the node's SPIFFE ID; `route` the route pattern, for the
   * metric and the summary; `cost` the tokens the request takes (the SVIDs a batch asks for).
   */
  admit(key: string, route: string, cost = 1): TakeResult {
    const r = this.buckets.take(key, cost);
    if (r.ok) return r;
    this.o.metrics.rateLimited(route);
    this.merge(key, { count: 1, routes: { [route]: 1 } });
    return r;
  }

  private merge(who: string, add: Tally): void {
    const key = this.tallies.has(who) || this.tallies.size < this.o.maxKeys ? who : this.o.subject.others;
    const t = this.tallies.get(key) ?? { count: 0, routes: {} };
    t.count += add.count;
    for (const [route, n] of Object.entries(add.routes)) t.routes[route] = (t.routes[route] ?? 0) + n;
    this.tallies.set(key, t);
  }

  /** Writes one summary record per key refused since the last flush; returns how many. */
  async flush(): Promise<number> {
    const windowEnd = this.o.clock();
    const tallies = this.tallies;
    const written = tallies.size;
    const windowStart = this.windowStart;
    this.tallies = new Map();
    this.windowStart = windowEnd;
    for (const [key, t] of tallies) {
      try {
        await this.o.audit.append({
          time: windowEnd,
          event: AUDIT_EVENTS.rateLimitedSummary,
          outcome: "refused",
          code: "rate_limited",
          actor: key === this.o.subject.others ? key : this.o.subject.actorOf(key),
          details: { count: t.count, routes: t.routes, windowStart: windowStart.toISOString(), windowEnd: windowEnd.toISOString() },
        });
        tallies.delete(key);
      } catch (e) {
        // Not written: fold what is left back into the open window, so the next flush accounts for it.
        this.windowStart = windowStart;
        for (const [k, left] of tallies) this.merge(k, left);
        throw e;
      }
    }
    return written;
  }
}
