import { createHash, randomUUID } from "node:crypto";
import { createReadStream, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { AuditCheckpoint, AuditLog, AuditVerification } from "../audit/log.js";
import { JOIN_TOKEN_ATTESTOR } from "../attestors/join-token/attestor.js";
import { HallmarkError } from "../errors.js";
import { joinTokenHash, newJoinToken } from "../join-tokens/token.js";
import { HALLMARK_NAMESPACE, SpiffeId, inHallmarkNamespace, parseMemberId, type TrustDomain } from "../spiffe/id.js";
import type { EntryRecord, NodeBanRecord, NodeRecord, Store } from "../store/types.js";
import { AUDIT_EVENTS } from "./audit-events.js";
import type { Clock } from "./clock.js";
import type { Metrics } from "./metrics.js";
import type { AuditChainVerifier, CaAdministration, CaKeyKindName, RotationStep } from "./ports.js";

export interface AdminServiceDeps {
  trustDomain: TrustDomain;
  store: Store;
  audit: AuditLog;
  auditVerifier: AuditChainVerifier;
  metrics: Metrics;
  ca: CaAdministration;
  clock: Clock;
  maxJoinTokenTtlSeconds: number;
  /** Where database snapshots are written before they are sent (the data directory: private, same filesystem). */
  backupDir?: string | undefined;
  /** Federation relationships: an entry may federate only with trust domains that have one. */
  federation?: { requireRelationships(trustDomains: readonly string[]): Promise<string[]> } | undefined;
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
  /** Handed to workloads with the SVID (Workload API `hint`). */
  hint?: string | undefined;
  /** Foreign trust domains whose bundles the entry's workloads receive; each needs a federation relationship. */
  federatesWith?: string[] | undefined;
}

/** Administration, reached only through the local admin socket. Every change is audited. */
export class AdminService {
  private verifying = false;

  constructor(private readonly deps: AdminServiceDeps) {}

  async createJoinToken(spiffeId: string, ttlSeconds: number): Promise<{ token: string; spiffeId: string; expiresAt: Date }> {
    const id = parseMemberId(spiffeId, this.deps.trustDomain);
    await this.refuseReservedForJoinToken(id);
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
    await this.refuseReservedForWorkload(id);
    for (const s of input.selectors) {
      if (!SELECTOR.test(s)) throw new HallmarkError("invalid_selector", `selector '${s.slice(0, 80)}' must be type:value`);
    }
    for (const d of input.dnsNames ?? []) {
      if (!DNS_NAME.test(d)) throw new HallmarkError("invalid_request", `'${d.slice(0, 80)}' is not a DNS name`);
    }
    const federatesWith = await this.federatedDomains(input.federatesWith ?? []);
    const entry: EntryRecord = {
      id: randomUUID(),
      spiffeId: id.toString(),
      parentId: parent.toString(),
      selectors: [...new Set(input.selectors)].sort(),
      x509SvidTtlSeconds: input.x509SvidTtlSeconds,
      jwtSvidTtlSeconds: input.jwtSvidTtlSeconds,
      dnsNames: input.dnsNames ?? [],
      hint: input.hint ?? "",
      federatesWith,
      admin: false,
      createdAt: this.deps.clock(),
    };
    await this.deps.store.entries.create(entry);
    await this.audit(AUDIT_EVENTS.entryCreate, entry.spiffeId, {
      entryId: entry.id,
      parentId: entry.parentId,
      selectors: entry.selectors,
      ...(federatesWith.length ? { federatesWith } : {}),
    });
    return entry;
  }

  listEntries(filter: { parentId?: string; spiffeId?: string } = {}): Promise<EntryRecord[]> {
    if (filter.parentId !== undefined) SpiffeId.parse(filter.parentId);
    if (filter.spiffeId !== undefined) SpiffeId.parse(filter.spiffeId);
    return this.deps.store.entries.list(filter);
  }

  async deleteEntry(id: string): Promise<void> {
    const entry = await this.deps.store.entries.get(id);
    if (!entry || !(await this.deps.store.entries.delete(id, this.deps.clock()))) throw new HallmarkError("entry_not_found", "no such registration entry");
    await this.audit(AUDIT_EVENTS.entryDelete, entry.spiffeId, { entryId: id });
  }

  listNodes(): Promise<NodeRecord[]> {
    return this.deps.store.nodes.list();
  }

  listNodeBans(): Promise<NodeBanRecord[]> {
    return this.deps.store.nodes.listBans();
  }

  /** Every SVID the node holds stops working; it may attest again (a ban also refuses that). */
  async evictNode(spiffeId: string): Promise<void> {
    const id = SpiffeId.parse(spiffeId).toString();
    if (!(await this.deps.store.nodes.evict(id, this.deps.clock()))) throw new HallmarkError("node_not_found", "no such node");
    await this.audit(AUDIT_EVENTS.nodeEvict, id, {});
  }

  /**
   * Evicts the node and refuses its re-attestation, by SPIFFE ID and by hardware identity, until
   * `unbanNode`: what SPIRE calls a ban, for a node that must not come back with a new token.
   */
  async banNode(spiffeId: string): Promise<void> {
    const id = SpiffeId.parse(spiffeId).toString();
    const node = await this.deps.store.nodes.get(id);
    if (!node) throw new HallmarkError("node_not_found", "no such node");
    const now = this.deps.clock();
    await this.deps.store.nodes.ban({ spiffeId: id, attestorType: node.attestorType, hardwareId: node.hardwareId, createdAt: now });
    await this.deps.store.nodes.evict(id, now);
    await this.audit(AUDIT_EVENTS.nodeBan, id, { attestor: node.attestorType, hardwareId: node.hardwareId ?? null });
  }

  async unbanNode(spiffeId: string): Promise<void> {
    const id = SpiffeId.parse(spiffeId).toString();
    if (!(await this.deps.store.nodes.unban(id))) throw new HallmarkError("node_not_found", "no ban on this node");
    await this.audit(AUDIT_EVENTS.nodeUnban, id, {});
  }

  async rotate(kind: CaKeyKindName, step: RotationStep): Promise<{ changed: string[]; notes?: string[] }> {
    const result = await this.deps.ca.rotate(kind, step);
    await this.audit(AUDIT_EVENTS.caRotate, undefined, { kind, step, changed: result.changed });
    return result;
  }

  /**
   * A consistent snapshot of the database, taken while the server serves, in a private file of
   * the data directory; the caller sends it and removes it (`remove`). The audit record names
   * its SHA-256, so a backup file can be matched to the moment it was taken.
   */
  async backup(): Promise<{ path: string; bytes: number; sha256: string; remove: () => void }> {
    if (!this.deps.backupDir) throw new HallmarkError("backup_failed", "this server has no directory for backups");
    const path = join(this.deps.backupDir, `backup-${randomUUID()}.db`);
    const remove = () => rmSync(path, { force: true });
    try {
      await this.deps.store.backup(path);
      const sha256 = await sha256File(path);
      const bytes = statSync(path).size;
      await this.audit(AUDIT_EVENTS.backup, undefined, { bytes, sha256 });
      return { path, bytes, sha256, remove };
    } catch (e) {
      remove();
      const code = e instanceof HallmarkError ? e.code : "backup_failed";
      await this.deps.audit.append({ time: this.deps.clock(), event: AUDIT_EVENTS.backup, outcome: "error", code, actor: "admin:socket", details: {} });
      throw e instanceof HallmarkError ? e : new HallmarkError("backup_failed", "the database snapshot could not be taken", { cause: e });
    }
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

  private async federatedDomains(names: readonly string[]): Promise<string[]> {
    if (names.length === 0) return [];
    if (!this.deps.federation) throw new HallmarkError("federation_not_found", "this server has no federation relationships");
    return this.deps.federation.requireRelationships(names);
  }

  /** A workload ID may not be Hallmark's own or a node's: its SVID would pose as them. */
  private async refuseReservedForWorkload(id: SpiffeId): Promise<void> {
    if (inHallmarkNamespace(id)) {
      throw new HallmarkError("spiffe_id_reserved", `${id} is in ${HALLMARK_NAMESPACE}/, which only the server assigns`);
    }
    if (await this.deps.store.nodes.get(id.toString())) {
      throw new HallmarkError("spiffe_id_reserved", `${id} is an attested node's ID`);
    }
  }

  /**
   * A join token may re-admit a join-token node (after an eviction, say), but never names
   * Hallmark's namespace, a hardware-attested node, or a workload's ID.
   */
  private async refuseReservedForJoinToken(id: SpiffeId): Promise<void> {
    if (inHallmarkNamespace(id)) {
      throw new HallmarkError("spiffe_id_reserved", `${id} is in ${HALLMARK_NAMESPACE}/, which only the server assigns`);
    }
    const node = await this.deps.store.nodes.get(id.toString());
    if (node && node.attestorType !== JOIN_TOKEN_ATTESTOR) {
      throw new HallmarkError("spiffe_id_reserved", `${id} is a ${node.attestorType}-attested node's ID`);
    }
    if ((await this.deps.store.entries.list({ spiffeId: id.toString() })).length > 0) {
      throw new HallmarkError("spiffe_id_reserved", `${id} is a registration entry's workload ID`);
    }
  }

  private async audit(event: string, spiffeId: string | undefined, details: Record<string, unknown>): Promise<void> {
    await this.deps.audit.append({ time: this.deps.clock(), event, outcome: "success", actor: "admin:socket", spiffeId, details });
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
