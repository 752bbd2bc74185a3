import { randomUUID } from "node:crypto";
import type { AuditCheckpoint, AuditLog, AuditVerification } from "../audit/log.js";
import { HallmarkError } from "../errors.js";
import { joinTokenHash, newJoinToken } from "../join-tokens/token.js";
import { SpiffeId, parseMemberId, type TrustDomain } from "../spiffe/id.js";
import type { EntryRecord, NodeRecord, Store } from "../store/types.js";
import { AUDIT_EVENTS } from "./audit-events.js";
import type { Clock } from "./clock.js";
import type { Metrics } from "./metrics.js";
import type { AuditChainVerifier, CaAdministration, RotationStep } from "./ports.js";

export interface AdminServiceDeps {
  trustDomain: TrustDomain;
  store: Store;
  audit: AuditLog;
  auditVerifier: AuditChainVerifier;
  metrics: Metrics;
  ca: CaAdministration;
  clock: Clock;
  maxJoinTokenTtlSeconds: number;
}

const SELECTOR = /^[a-z0-9_]+:[\x21-\x7e]{1,512}$/;
const DNS_NAME = /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export interface NewEntry {
  spiffeId: string;
  parentId: string;
  selectors: string[];
  x509SvidTtlSeconds?: number | undefined;
  jwtSvidTtlSeconds?: number | undefined;
  dnsNames?: string[] | undefined;
  admin?: boolean | undefined;
}

/** Administration, reached only through the local admin socket. Every change is audited. */
export class AdminService {
  private verifying = false;

  constructor(private readonly deps: AdminServiceDeps) {}

  async createJoinToken(spiffeId: string, ttlSeconds: number): Promise<{ token: string; spiffeId: string; expiresAt: Date }> {
    const id = parseMemberId(spiffeId, this.deps.trustDomain);
    if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0 || ttlSeconds > this.deps.maxJoinTokenTtlSeconds) {
      throw new HallmarkError("ttl_invalid", `the TTL must be between 1 s and ${this.deps.maxJoinTokenTtlSeconds} s`);
    }
    const now = this.deps.clock();
    const token = newJoinToken();
    const tokenHash = joinTokenHash(token);
    const expiresAt = new Date(now.getTime() + ttlSeconds * 1000);
    await this.deps.store.joinTokens.create({ tokenHash, spiffeId: id.toString(), expiresAt, createdAt: now });
    await this.audit(AUDIT_EVENTS.tokenCreate, id.toString(), { tokenHashPrefix: tokenHash.slice(0, 16), expiresAt: expiresAt.toISOString() });
    return { token, spiffeId: id.toString(), expiresAt };
  }

  async createEntry(input: NewEntry): Promise<EntryRecord> {
    const id = parseMemberId(input.spiffeId, this.deps.trustDomain);
    const parent = parseMemberId(input.parentId, this.deps.trustDomain);
    if (id.equals(parent)) throw new HallmarkError("invalid_request", "an entry cannot be its own parent");
    for (const s of input.selectors) {
      if (!SELECTOR.test(s)) throw new HallmarkError("invalid_selector", `selector '${s.slice(0, 80)}' must be type:value`);
    }
    for (const d of input.dnsNames ?? []) {
      if (!DNS_NAME.test(d)) throw new HallmarkError("invalid_request", `'${d.slice(0, 80)}' is not a DNS name`);
    }
    const entry: EntryRecord = {
      id: randomUUID(),
      spiffeId: id.toString(),
      parentId: parent.toString(),
      selectors: [...new Set(input.selectors)].sort(),
      x509SvidTtlSeconds: input.x509SvidTtlSeconds,
      jwtSvidTtlSeconds: input.jwtSvidTtlSeconds,
      dnsNames: input.dnsNames ?? [],
      admin: input.admin ?? false,
      createdAt: this.deps.clock(),
    };
    await this.deps.store.entries.create(entry);
    await this.audit(AUDIT_EVENTS.entryCreate, entry.spiffeId, { entryId: entry.id, parentId: entry.parentId, selectors: entry.selectors });
    return entry;
  }

  listEntries(filter: { parentId?: string; spiffeId?: string } = {}): Promise<EntryRecord[]> {
    if (filter.parentId !== undefined) SpiffeId.parse(filter.parentId);
    if (filter.spiffeId !== undefined) SpiffeId.parse(filter.spiffeId);
    return this.deps.store.entries.list(filter);
  }

  async deleteEntry(id: string): Promise<void> {
    const entry = await this.deps.store.entries.get(id);
    if (!entry || !(await this.deps.store.entries.delete(id))) throw new HallmarkError("entry_not_found", "no such registration entry");
    await this.audit(AUDIT_EVENTS.entryDelete, entry.spiffeId, { entryId: id });
  }

  listNodes(): Promise<NodeRecord[]> {
    return this.deps.store.nodes.list();
  }

  async evictNode(spiffeId: string): Promise<void> {
    const id = SpiffeId.parse(spiffeId).toString();
    if (!(await this.deps.store.nodes.evict(id, this.deps.clock()))) throw new HallmarkError("node_not_found", "no such node");
    await this.audit(AUDIT_EVENTS.nodeEvict, id, {});
  }

  async rotate(kind: "x509" | "jwt", step: RotationStep): Promise<{ changed: string[] }> {
    const result = await this.deps.ca.rotate(kind, step);
    await this.audit(AUDIT_EVENTS.caRotate, undefined, { kind, step, changed: result.changed });
    return result;
  }

  /**
   * One at a time: a second caller is refused at once rather than queued, since each walk costs
   * seconds of a core and the answer the first one gets is the same.
   */
  async verifyAudit(checkpoint?: AuditCheckpoint): Promise<AuditVerification> {
    if (this.verifying) throw new HallmarkError("audit_verify_running", "an audit verification is already running: try again when it has finished");
    this.verifying = true;
    try {
      const v = await this.deps.auditVerifier.verify(checkpoint);
      this.deps.metrics.auditChainChecked(v.ok, v.records);
      return v;
    } finally {
      this.verifying = false;
    }
  }

  private async audit(event: string, spiffeId: string | undefined, details: Record<string, unknown>): Promise<void> {
    await this.deps.audit.append({ time: this.deps.clock(), event, outcome: "success", actor: "admin:socket", spiffeId, details });
  }
}
