import type { AuditLog } from "../audit/log.js";
import { type Logged, logIndexOf } from "./logged.js";
import { HallmarkError, isHallmarkError } from "../errors.js";
import { validateAudience } from "../issuer/jwt-svid.js";
import { validateWitPublicJwk } from "../issuer/wit-svid.js";
import { SpiffeId, type TrustDomain } from "../spiffe/id.js";
import type { EntryRecord, IssuedSvidRecord, NodeRecord, Store } from "../store/types.js";
import { checkCsrSans } from "./attestation.js";
import { AUDIT_EVENTS } from "./audit-events.js";
import type { Clock } from "./clock.js";
import type { Metrics } from "./metrics.js";
import { isCurrentNodeSvid, supersede } from "./node-svid.js";
import type { CsrParser, IssuedJwt, IssuedWit, IssuedX509, PresentedSvid, SvidIssuer } from "./ports.js";

/** Entries (or changes) per entry-sync answer: bounds every answer, whatever the node's share. */
export const ENTRY_PAGE = 500;

/** The full list's page token: which part of the list it continues, and the last id sent. */
export const PAGE_TOKEN = /^(children|aliases):([0-9a-f-]{36})?$/;

function parsePageToken(token: string | undefined): ["children" | "aliases", string | undefined] {
  if (token === undefined) return ["children", undefined];
  const m = PAGE_TOKEN.exec(token);
  if (!m) throw new HallmarkError("invalid_request", "page_after is not a next_page this server gave");
  return [m[1] as "children" | "aliases", m[2] || undefined];
}

/** What an agent's entry poll gets: a full list (maybe one page of it), or the changes since its revision. */
export type EntrySync =
  | { full: true; revision: number; entries: EntryRecord[]; nextPage: string | undefined }
  | { full: false; revision: number; more: boolean; created: EntryRecord[]; deleted: string[] };

/** A workload's JWT-SVID as the node receives it. */
export type WorkloadJwt = IssuedJwt & { spiffeId: string; federatesWith: string[] } & Logged;

export interface NodeIssuanceDeps {
  trustDomain: TrustDomain;
  /** The server's own ID: entries parented to it apply to every node whose selectors match (node aliases). */
  serverId: SpiffeId;
  store: Store;
  audit: AuditLog;
  issuer: SvidIssuer;
  parseCsr: CsrParser;
  clock: Clock;
  ttl: { node: number; x509: number; jwt: number; wit: number; max: number };
  /** How long a renewed node's previous SVID keeps working, for requests already in flight. */
  renewalOverlapSeconds: number;
  metrics: Metrics;
  /** The `iss` of JWT-SVIDs: the OIDC discovery document's issuer, from the same function that serves it. */
  jwtIssuer: () => string;
}

/**
 * What an attested node may do with its SVID (over mutual TLS): renew it (join-token nodes
 * only; hardware nodes attest again with fresh evidence), and fetch X.509, JWT and WIT SVIDs for
 * the registration entries it is entitled to.
 */
export class NodeIssuanceService {
  constructor(private readonly deps: NodeIssuanceDeps) {}

  /**
   * The node behind a verified client certificate, checked at request time: the certificate must
   * be unexpired now, and be the node's current SVID (or the one it just replaced, within the
   * renewal overlap); the node must be neither evicted nor unknown. Any other SVID with the node's
   * ID (an older one, one from before an eviction, a workload SVID for the same ID) is refused.
   *
   * Each refusal is audited, after `admitRefusal`, which throws rate_limited once the caller has
   * spent its allowance of refusals (the API's per-address one): any workload SVID chains to the
   * bundle, so without it any workload could write refusal records as fast as it asked.
   */
  async authenticate(presented: PresentedSvid, admitRefusal?: () => void): Promise<NodeRecord> {
    const now = this.deps.clock();
    try {
      return await this.checkNodeSvid(presented, now);
    } catch (e) {
      admitRefusal?.();
      await this.auditRefusal(e, now, presented.spiffeId, presented.serial);
      throw e;
    }
  }

  /**
   * As authenticate, for a credential that is still to be verified (a channel-bound node proof,
   * src/api/node-proof.ts): `verify` checks it at the service's time, and its refusal is audited
   * too, under `actor` (the peer address: an unverified SPIFFE ID names nobody), after `admitRefusal`.
   */
  async authenticateProof(actor: string, verify: (now: Date) => Promise<PresentedSvid>, admitRefusal?: () => void): Promise<NodeRecord> {
    const now = this.deps.clock();
    let presented: PresentedSvid;
    try {
      presented = await verify(now);
    } catch (e) {
      admitRefusal?.();
      await this.auditRefusal(e, now, actor, undefined);
      throw e;
    }
    return this.authenticate(presented, admitRefusal);
  }

  private async auditRefusal(e: unknown, now: Date, actor: string, serial: string | undefined): Promise<void> {
    const code = isHallmarkError(e) ? e.code : "internal";
    await this.deps.audit.append({
      time: now,
      event: AUDIT_EVENTS.authenticateNode,
      outcome: isHallmarkError(e) ? "refused" : "error",
      code,
      actor: actor.slice(0, 2048),
      ...(serial !== undefined ? { serial } : {}),
      details: { reason: isHallmarkError(e) ? e.message : "internal error" },
    });
    this.deps.metrics.issuance("node", code);
  }

  private async checkNodeSvid(presented: PresentedSvid, now: Date): Promise<NodeRecord> {
    let id: SpiffeId;
    try {
      id = SpiffeId.parse(presented.spiffeId);
    } catch {
      throw new HallmarkError("client_cert_invalid", "the client certificate has no valid SPIFFE ID");
    }
    if (!id.memberOf(this.deps.trustDomain)) {
      throw new HallmarkError("client_cert_invalid", "the client certificate is from another trust domain");
    }
    if (now >= presented.notAfter || now < presented.notBefore) {
      throw new HallmarkError("node_svid_expired", `this node SVID is valid only until ${presented.notAfter.toISOString()}: attest or renew`);
    }
    const node = await this.deps.store.nodes.get(id.toString());
    if (!node) throw new HallmarkError("client_cert_invalid", "the client certificate does not belong to an attested node");
    if (node.evicted) throw new HallmarkError("node_evicted", "this node has been evicted");
    if (!isCurrentNodeSvid(node, presented.serial, now)) {
      throw new HallmarkError("node_svid_superseded", "this node SVID was replaced by a newer one: use the current SVID");
    }
    return node;
  }

  async renew(node: NodeRecord, csrPem: string): Promise<IssuedX509 & Logged> {
    return this.audited(AUDIT_EVENTS.renewNode, "node", node, undefined, async (now) => {
      if (node.canReattest) {
        throw new HallmarkError("reattestation_required", "hardware-attested nodes renew by attesting again with fresh evidence");
      }
      const csr = this.deps.parseCsr(csrPem);
      const id = SpiffeId.parse(node.spiffeId);
      checkCsrSans(csr, id);
      const svid = await this.deps.issuer.issueX509({ spki: csr.spki, spiffeId: id, ttlSeconds: this.deps.ttl.node, now });
      await this.deps.store.nodes.upsert({ ...node, ...supersede(node, svid, now, this.deps.renewalOverlapSeconds), updatedAt: now });
      return { result: svid, spiffeId: id.toString(), serial: svid.serial, svidRecord: svid.svidRecord };
    });
  }

  async workloadX509(node: NodeRecord, csrPem: string, requested?: string): Promise<IssuedX509 & { spiffeId: string; federatesWith: string[] } & Logged> {
    return this.audited(AUDIT_EVENTS.issueX509, "x509", node, requested, async (now) => {
      const csr = this.deps.parseCsr(csrPem);
      const wanted = requested ?? (csr.uriSans.length === 1 ? csr.uriSans[0] : undefined);
      const entry = await this.entitledEntry(node, wanted);
      const id = SpiffeId.parse(entry.spiffeId);
      checkCsrSans(csr, id);
      const ttlSeconds = Math.min(entry.x509SvidTtlSeconds ?? this.deps.ttl.x509, this.deps.ttl.max);
      const svid = await this.deps.issuer.issueX509({
        spki: csr.spki,
        spiffeId: id,
        ttlSeconds,
        dnsNames: entry.dnsNames,
        nodeId: node.spiffeId,
        now,
      });
      return {
        result: { ...svid, spiffeId: id.toString(), federatesWith: entry.federatesWith ?? [] },
        spiffeId: id.toString(),
        serial: svid.serial,
        svidRecord: svid.svidRecord,
      };
    });
  }

  async workloadJwt(node: NodeRecord, audience: string[], requested?: string): Promise<WorkloadJwt> {
    return this.jwtFor(node, audience, requested, (id) => this.entitledEntry(node, id));
  }

  /**
   * JWT-SVIDs for several (audience, SPIFFE ID) pairs at once: each judged, issued and audited as
   * workloadJwt would, settled in order. The node's entitlement to each SPIFFE ID is looked up
   * once per batch, not once per token; they run together, so their audit records share a commit.
   */
  async workloadJwts(node: NodeRecord, requests: readonly { audience: string[]; spiffeId: string }[]): Promise<PromiseSettledResult<WorkloadJwt>[]> {
    const entries = new Map<string, Promise<EntryRecord>>();
    const entryFor = (id: string | undefined) => {
      const key = id ?? "";
      let entry = entries.get(key);
      if (!entry) entries.set(key, (entry = this.entitledEntry(node, id)));
      return entry;
    };
    return Promise.allSettled(requests.map((r) => this.jwtFor(node, r.audience, r.spiffeId, entryFor)));
  }

  private async jwtFor(node: NodeRecord, audience: string[], requested: string | undefined, entitled: (id: string | undefined) => Promise<EntryRecord>): Promise<WorkloadJwt> {
    return this.audited(AUDIT_EVENTS.issueJwt, "jwt", node, requested, async (now) => {
      validateAudience(audience);
      const entry = await entitled(requested);
      const id = SpiffeId.parse(entry.spiffeId);
      const ttlSeconds = Math.min(entry.jwtSvidTtlSeconds ?? this.deps.ttl.jwt, this.deps.ttl.max);
      const jwt = await this.deps.issuer.issueJwt({ spiffeId: id, audience, ttlSeconds, issuer: this.deps.jwtIssuer(), nodeId: node.spiffeId, now });
      return { result: { ...jwt, spiffeId: id.toString(), federatesWith: entry.federatesWith ?? [] }, spiffeId: id.toString(), serial: undefined, svidRecord: jwt.svidRecord };
    });
  }

  /**
   * A WIT-SVID binding `publicKeyJwk` (the workload's key, generated where the workload's private
   * key lives: the agent) to an entry the node is entitled to. The key is checked before the
   * entitlement, and both refusals are audited; the success record's serial is the token's jti.
   */
  async workloadWit(node: NodeRecord, publicKeyJwk: unknown, requested?: string): Promise<IssuedWit & { spiffeId: string } & Logged> {
    return this.audited(AUDIT_EVENTS.issueWit, "wit", node, requested, async (now) => {
      validateWitPublicJwk(publicKeyJwk);
      const entry = await this.entitledEntry(node, requested);
      const id = SpiffeId.parse(entry.spiffeId);
      const ttlSeconds = Math.min(this.deps.ttl.wit, this.deps.ttl.max);
      const wit = await this.deps.issuer.issueWit({ spiffeId: id, publicKeyJwk, ttlSeconds, nodeId: node.spiffeId, now });
      return { result: { ...wit, spiffeId: id.toString() }, spiffeId: id.toString(), serial: wit.jti, svidRecord: wit.svidRecord };
    });
  }

  /** Entries the node may receive: its children, and aliases whose selectors the node has. */
  async entitledEntries(node: NodeRecord): Promise<EntryRecord[]> {
    const children = await this.deps.store.entries.list({ parentId: node.spiffeId });
    const aliases = (await this.deps.store.entries.list({ parentId: this.deps.serverId.toString() })).filter((e) => this.entitles(node, e));
    return [...children, ...aliases];
  }

  /**
   * One page of the node's full list: its children in id order, read by pages from the store
   * (the cost of a page does not grow with the node's entry count), then the aliases its selectors
   * match. The page token says which of the two it continues: `children:<id>` or `aliases:<id>`.
   */
  private async fullListPage(node: NodeRecord, token: string | undefined): Promise<{ entries: EntryRecord[]; nextPage: string | undefined }> {
    const [phase, after] = parsePageToken(token);
    const entries: EntryRecord[] = [];
    if (phase === "children") {
      const children = await this.deps.store.entries.listByParent(node.spiffeId, after, ENTRY_PAGE + 1);
      if (children.length > ENTRY_PAGE) {
        const page = children.slice(0, ENTRY_PAGE);
        return { entries: page, nextPage: `children:${page.at(-1)!.id}` };
      }
      entries.push(...children);
    }
    const aliasesAfter = phase === "aliases" ? after : undefined;
    // Aliases are read whole and filtered by the node's selectors: a server has few of them.
    const aliases = (await this.deps.store.entries.list({ parentId: this.deps.serverId.toString() }))
      .filter((e) => this.entitles(node, e) && (aliasesAfter === undefined || e.id > aliasesAfter))
      .sort((a, b) => (a.id < b.id ? -1 : 1));
    const room = ENTRY_PAGE - entries.length;
    entries.push(...aliases.slice(0, room));
    const more = aliases.length > room;
    return { entries, nextPage: more ? `aliases:${entries.at(-1)?.id ?? aliasesAfter ?? ""}` : undefined };
  }

  /**
   * entitledEntries(node) restricted to one SPIFFE ID: the node's children and the aliases in one
   * read through the (spiffe_id, parent_id) index, children first as in entitledEntries.
   */
  private async entitledEntriesFor(node: NodeRecord, spiffeId: string): Promise<EntryRecord[]> {
    const found = await this.deps.store.entries.listForSpiffeId(spiffeId, [node.spiffeId, this.deps.serverId.toString()]);
    const children = found.filter((e) => e.parentId === node.spiffeId);
    const aliases = found.filter((e) => e.parentId !== node.spiffeId && this.entitles(node, e));
    return [...children, ...aliases];
  }

  /** Whether an entry with this parent and these selectors is the node's (entitledEntries' rule, for one entry or tombstone). */
  private entitles(node: NodeRecord, e: { parentId: string; selectors: readonly string[] }): boolean {
    if (e.parentId === node.spiffeId) return true;
    return e.parentId === this.deps.serverId.toString() && e.selectors.length > 0 && e.selectors.every((s) => node.selectors.includes(s));
  }

  /**
   * The node's entries for an agent that keeps a copy: with `since` (a revision an earlier answer
   * gave) only what changed for this node after it; without it, or when the change log cannot
   * continue from it, the full list, by pages of ENTRY_PAGE in id order (`pageAfter`: the last id
   * of the previous page). The revision is read before the list, so replaying the changes after
   * it is never short of anything (creations and deletions apply idempotently).
   * With `waitMs` (a long poll), an answer with nothing for this node waits until the store
   * announces a change of the entries (made on this replica or, on PostgreSQL, any other) that
   * concerns it, the time is up, or the server closes; it then carries the latest revision.
   */
  async entrySync(node: NodeRecord, since: number | undefined, pageAfter: string | undefined, waitMs = 0): Promise<EntrySync> {
    if (since === undefined || waitMs <= 0 || this.closing) return this.entrySyncNow(node, since, pageAfter);
    const deadline = Date.now() + waitMs;
    // Armed before each read: a change committed between the read and the wait still wakes it.
    let wake: () => void = () => undefined;
    const arm = () => new Promise<void>((resolve) => (wake = resolve));
    const unsubscribe = this.deps.store.coordination.onChange("entries", () => wake());
    const stop = () => wake();
    const timer = setTimeout(stop, waitMs);
    this.waiting.add(stop);
    try {
      for (let revision = since; ; ) {
        const notice = arm();
        const answer = await this.entrySyncNow(node, revision, pageAfter);
        const nothing = !answer.full && !answer.more && answer.created.length === 0 && answer.deleted.length === 0;
        if (!nothing || this.closing || Date.now() >= deadline) return answer;
        // Changes for other nodes only: skip past them and keep waiting (agents are not woken by every change in the domain).
        revision = answer.revision;
        await notice;
      }
    } finally {
      unsubscribe();
      clearTimeout(timer);
      this.waiting.delete(stop);
    }
  }

  /** Ends every long poll now (with what there is) and waits no more: the server is closing. */
  stopWaiting(): void {
    this.closing = true;
    for (const wake of this.waiting) wake();
  }

  /** The wake-ups of the long polls in progress, for stopWaiting. */
  private readonly waiting = new Set<() => void>();
  private closing = false;

  private async entrySyncNow(node: NodeRecord, since: number | undefined, pageAfter: string | undefined): Promise<EntrySync> {
    const page = since === undefined ? undefined : await this.deps.store.entries.changesSince(since, ENTRY_PAGE);
    if (!page) {
      const revision = await this.deps.store.entries.revision();
      return { full: true, revision, ...(await this.fullListPage(node, pageAfter)) };
    }
    const mine = page.changes.filter((c) => this.entitles(node, c));
    return {
      full: false,
      revision: page.revision,
      more: page.more,
      // A creation whose entry is gone already is followed by its tombstone: nothing to send.
      created: mine.flatMap((c) => (c.kind === "created" && c.entry ? [c.entry] : [])),
      deleted: mine.filter((c) => c.kind === "deleted").map((c) => c.entryId),
    };
  }

  private async entitledEntry(node: NodeRecord, requested: string | undefined): Promise<EntryRecord> {
    if (requested !== undefined) {
      const id = SpiffeId.parse(requested);
      if (!id.memberOf(this.deps.trustDomain)) {
        throw new HallmarkError("spiffe_id_outside_trust_domain", `${id} is not in trust domain ${this.deps.trustDomain}`);
      }
    }
    // A named identity is looked up by (parent, SPIFFE ID), an index hit: the cost of an issuance
    // does not grow with the node's entry count (issue 10). Unnamed requests need the whole list.
    const matching = requested === undefined ? await this.entitledEntries(node) : await this.entitledEntriesFor(node, requested);
    const [first, ...rest] = matching;
    if (!first) {
      throw requested === undefined
        ? new HallmarkError("no_entries", "no registration entry is parented to this node")
        : new HallmarkError("not_entitled", `this node is not entitled to ${requested}`);
    }
    if (rest.some((e) => e.spiffeId !== first.spiffeId)) {
      throw new HallmarkError("ambiguous_spiffe_id", "several entries apply to this node: name the SPIFFE ID");
    }
    return first;
  }

  private async audited<T extends object>(
    event: string,
    kind: "x509" | "jwt" | "wit" | "node",
    node: NodeRecord,
    requested: string | undefined,
    work: (now: Date) => Promise<{ result: T; spiffeId: string; serial: string | undefined; svidRecord: IssuedSvidRecord }>,
  ): Promise<T & Logged> {
    const now = this.deps.clock();
    const started = process.hrtime.bigint();
    try {
      const { result, spiffeId, serial, svidRecord } = await work(now);
      // The SVID's record and its audit record: one transaction, committed before the answer.
      const record = await this.deps.audit.append({ time: now, event, outcome: "success", actor: node.spiffeId, spiffeId, serial, details: {} }, svidRecord);
      this.deps.metrics.issuance(kind, "success", Number(process.hrtime.bigint() - started) / 1e9);
      return { ...result, logIndex: logIndexOf(record) };
    } catch (e) {
      const code = isHallmarkError(e) ? e.code : "internal";
      await this.deps.audit.append({
        time: now,
        event,
        outcome: isHallmarkError(e) ? "refused" : "error",
        code,
        actor: node.spiffeId,
        spiffeId: requested,
        details: { reason: isHallmarkError(e) ? e.message : "internal error" },
      });
      this.deps.metrics.issuance(kind, code);
      throw e;
    }
  }
}
