/**
 * Prometheus metrics, in the text exposition format, without a client library: the handful of
 * series Hallmark exports do not justify a dependency.
 */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** Records per audit transaction: powers of two up to the largest batch a server may be configured with. */
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

interface Histogram {
  buckets: number[];
  sum: number;
  count: number;
}

const emptyHistogram = (bounds: readonly number[]): Histogram => ({ buckets: bounds.map(() => 0), sum: 0, count: 0 });

function observe(h: Histogram, bounds: readonly number[], value: number): void {
  bounds.forEach((le, i) => {
    if (value <= le) h.buckets[i] = (h.buckets[i] ?? 0) + 1;
  });
  h.sum += value;
  h.count += 1;
}

/** The _bucket, _sum and _count lines of one histogram series (`l`: its labels, possibly none). */
function renderHistogram(out: string[], name: string, l: string, bounds: readonly number[], h: Histogram): void {
  const sep = l ? `${l},` : "";
  bounds.forEach((le, i) => out.push(`${name}_bucket{${sep}le="${le}"} ${h.buckets[i]}`));
  out.push(`${name}_bucket{${sep}le="+Inf"} ${h.count}`);
  out.push(`${name}_sum${l ? `{${l}}` : ""} ${h.sum}`);
  out.push(`${name}_count${l ? `{${l}}` : ""} ${h.count}`);
}

export class Metrics {
  private readonly attestations = new Map<string, number>();
  private readonly issuances = new Map<string, number>();
  private readonly latency = new Map<string, Histogram>();
  private auditChain: { ok: boolean; records: number } | undefined;
  private readonly auditBatches = emptyHistogram(BATCH_BUCKETS);
  private readonly rateLimits = new Map<string, number>();
  private readonly connectionRefusals = new Map<string, number>();
  private openConnectionsNow: () => number = () => 0;
  private waitingRequestsNow: () => number = () => 0;
  private abandonedRequestsNow: () => number = () => 0;

  /** `outcome` is "success" or the refusal code. */
  attestation(attestor: string, outcome: string): void {
    bump(this.attestations, labels({ attestor, outcome }));
  }

  issuance(kind: "x509" | "jwt" | "wit" | "node", outcome: string, seconds?: number): void {
    bump(this.issuances, labels({ kind, outcome }));
    if (seconds === undefined) return;
    const key = labels({ kind });
    const h = this.latency.get(key) ?? emptyHistogram(LATENCY_BUCKETS);
    observe(h, LATENCY_BUCKETS, seconds);
    this.latency.set(key, h);
  }

  /** One audit transaction committed `records` records (AuditLog's group commit). */
  auditCommitted(records: number): void {
    observe(this.auditBatches, BATCH_BUCKETS, records);
  }

  /** The latest check of the audit chain: its tail at start, or a full `hallmark audit verify`. */
  auditChainChecked(ok: boolean, records: number): void {
    this.auditChain = { ok, records };
  }

  /** A request refused by a rate limit (per address, node or client); `route` is the route pattern. */
  rateLimited(route: string): void {
    bump(this.rateLimits, labels({ route }));
  }

  /**
   * A connection closed by a cap: on arrival, `address_cap` (too many from one address) or
   * `total_cap`; or `open_requests_cap`, when it brought more requests than it may hold open.
   */
  connectionRefused(reason: "address_cap" | "total_cap" | "open_requests_cap"): void {
    bump(this.connectionRefusals, labels({ reason }));
  }

  /** The gauge of open connections reads the listener's own count when rendered. */
  trackOpenConnections(read: () => number): void {
    this.openConnectionsNow = read;
  }

  /**
   * The gauge of requests waiting for their turn (src/api/arrival-order.ts), and the counter of
   * those let go because their connection closed meanwhile, read from the queue when rendered.
   */
  trackWaitingRequests(waiting: () => number, abandoned: () => number): void {
    this.waitingRequestsNow = waiting;
    this.abandonedRequestsNow = abandoned;
  }

  render(): string {
    const out: string[] = [];
    if (this.auditChain) {
      out.push("# HELP hallmark_audit_chain_ok 1 if the latest audit chain check (log tail at start, or a full verification) found it intact, else 0.");
      out.push("# TYPE hallmark_audit_chain_ok gauge");
      out.push(`hallmark_audit_chain_ok ${this.auditChain.ok ? 1 : 0}`);
      out.push("# HELP hallmark_audit_chain_checked_records Records the latest audit chain check verified before it ended or found a break.");
      out.push("# TYPE hallmark_audit_chain_checked_records gauge");
      out.push(`hallmark_audit_chain_checked_records ${this.auditChain.records}`);
    }
    out.push("# HELP hallmark_attestations_total Attestation outcomes by attestor and outcome (success or refusal code).");
    out.push("# TYPE hallmark_attestations_total counter");
    for (const [l, v] of this.attestations) out.push(`hallmark_attestations_total{${l}} ${v}`);
    out.push("# HELP hallmark_issuances_total SVID issuance outcomes by kind.");
    out.push("# TYPE hallmark_issuances_total counter");
    for (const [l, v] of this.issuances) out.push(`hallmark_issuances_total{${l}} ${v}`);
    out.push("# HELP hallmark_issuance_duration_seconds Time to issue one SVID, signing included.");
    out.push("# TYPE hallmark_issuance_duration_seconds histogram");
    for (const [l, h] of this.latency) renderHistogram(out, "hallmark_issuance_duration_seconds", l, LATENCY_BUCKETS, h);
    out.push("# HELP hallmark_audit_commit_batch_size Audit records per committed transaction (group commit): _count is transactions, _sum records.");
    out.push("# TYPE hallmark_audit_commit_batch_size histogram");
    renderHistogram(out, "hallmark_audit_commit_batch_size", "", BATCH_BUCKETS, this.auditBatches);
    out.push("# HELP hallmark_rate_limited_total Requests refused by a rate limit (429): per address (attestation, refused credentials), per node (issuance), per OAuth client.");
    out.push("# TYPE hallmark_rate_limited_total counter");
    for (const [l, v] of this.rateLimits) out.push(`hallmark_rate_limited_total{${l}} ${v}`);
    out.push("# HELP hallmark_connections_refused_total Connections closed by a cap: on arrival (address_cap, total_cap) or for too many open requests (open_requests_cap).");
    out.push("# TYPE hallmark_connections_refused_total counter");
    for (const [l, v] of this.connectionRefusals) out.push(`hallmark_connections_refused_total{${l}} ${v}`);
    out.push("# HELP hallmark_open_connections Connections open on the public listener.");
    out.push("# TYPE hallmark_open_connections gauge");
    out.push(`hallmark_open_connections ${this.openConnectionsNow()}`);
    out.push("# HELP hallmark_requests_waiting Requests read on the public listener and waiting for their turn to start (served in arrival order).");
    out.push("# TYPE hallmark_requests_waiting gauge");
    out.push(`hallmark_requests_waiting ${this.waitingRequestsNow()}`);
    out.push("# HELP hallmark_requests_abandoned_total Requests let go without starting because their connection closed while they waited their turn.");
    out.push("# TYPE hallmark_requests_abandoned_total counter");
    out.push(`hallmark_requests_abandoned_total ${this.abandonedRequestsNow()}`);
    return `${out.join("\n")}\n`;
  }
}

function bump(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

function labels(values: Record<string, string>): string {
  return Object.entries(values)
    .map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`)
    .join(",");
}
