import type { Logger } from "pino";
import type { AuditLog } from "../audit/log.js";
import { HallmarkError, isHallmarkError } from "../errors.js";
import { type SpiffeBundle, parseSpiffeBundle } from "../issuer/bundle.js";
import { pemBlocks } from "../pki/pem.js";
import { AUDIT_EVENTS } from "../service/audit-events.js";
import type { Clock } from "../service/clock.js";
import { SpiffeId, TrustDomain } from "../spiffe/id.js";
import type { FederationProfile, FederationRecord, Store } from "../store/types.js";
import { type BundleEndpoint, fetchBundle } from "./bundle-client.js";
import { federationError } from "./errors.js";
import { type JudgedBundle, judgeForeignBundle } from "./foreign-bundle.js";

/**
 * How often a foreign bundle is fetched: at the peer's `spiffe_refresh_hint`, never more often
 * than every 30 s (a peer cannot make us poll it in a loop) nor less often than daily (a peer
 * that says "a year" still has its rotations noticed), 5 minutes while no hint is known.
 */
export const REFRESH_BOUNDS = { minSeconds: 30, maxSeconds: 86_400, defaultSeconds: 300 } as const;

export interface FederationServiceDeps {
  trustDomain: TrustDomain;
  store: Store;
  audit: AuditLog;
  clock: Clock;
  log: Logger;
  /** Bound on one fetch (connect, TLS, answer), in milliseconds. */
  fetchTimeoutMs: number;
}

export interface NewFederation {
  trustDomain: string;
  bundleEndpointUrl: string;
  profile: FederationProfile;
  endpointSpiffeId?: string | undefined;
  /** The initial bundle (SPIFFE bundle JSON text): required for a self-serving https_spiffe endpoint. */
  trustBundle?: string | undefined;
  webRootsPem?: string | undefined;
}

/** What `update` may change; `webRootsPem: null` goes back to the default roots. */
export interface FederationChange {
  bundleEndpointUrl?: string | undefined;
  profile?: FederationProfile | undefined;
  endpointSpiffeId?: string | undefined;
  webRootsPem?: string | null | undefined;
  /** Replaces the held bundle (to re-bootstrap https_spiffe after the peer rotated unseen). */
  trustBundle?: string | undefined;
}

export interface RefreshResult {
  trustDomain: string;
  outcome: "updated" | "unchanged";
  sequence: number | undefined;
  previousSequence: number | undefined;
  nextRefreshAt: Date;
}

/** A foreign trust domain's current bundle, as handed to nodes and printed by `bundle show`. */
export interface ForeignBundle {
  trustDomain: string;
  json: string;
  bundle: SpiffeBundle;
}

/**
 * Federation relationships with foreign trust domains (SPIFFE Federation §6): administered over
 * the admin socket, each refreshed on its peer's refresh hint by `refreshDue` (a periodic task) or
 * at once by `refresh`. A refresh that fails in any way keeps the last good bundle; every adopted
 * bundle and every refusal is audited with its code.
 */
export class FederationService {
  /** One refresh per trust domain at a time in this process: a forced one waits for a scheduled one. */
  private readonly running = new Map<string, Promise<unknown>>();
  private readonly parsed = new Map<string, ForeignBundle>();

  constructor(private readonly deps: FederationServiceDeps) {}

  async create(input: NewFederation): Promise<FederationRecord> {
    const td = this.foreignTrustDomain(input.trustDomain);
    const now = this.deps.clock();
    const record: FederationRecord = {
      trustDomain: td.name,
      ...this.endpointParameters(td, input),
      nextRefreshAt: now,
      createdAt: now,
      updatedAt: now,
    };
    if (input.trustBundle !== undefined) Object.assign(record, this.initialBundle(td, input.trustBundle));
    this.requireBootstrap(td, record);
    await this.deps.store.federations.create(record);
    await this.auditAdmin(AUDIT_EVENTS.federationCreate, record, {});
    return record;
  }

  list(): Promise<FederationRecord[]> {
    return this.deps.store.federations.list();
  }

  async get(trustDomain: string): Promise<FederationRecord> {
    const r = await this.deps.store.federations.get(TrustDomain.parse(trustDomain).name);
    if (!r) throw federationError("federation_not_found", `no federation relationship with ${trustDomain}`);
    return r;
  }

  async update(trustDomain: string, change: FederationChange): Promise<FederationRecord> {
    const current = await this.get(trustDomain);
    const td = TrustDomain.parse(current.trustDomain);
    const profile = change.profile ?? current.profile;
    const merged: NewFederation = {
      trustDomain: td.name,
      bundleEndpointUrl: change.bundleEndpointUrl ?? current.bundleEndpointUrl,
      profile,
      // Switching to https_web drops the endpoint ID; switching to https_spiffe needs one given.
      endpointSpiffeId: profile === "https_spiffe" ? (change.endpointSpiffeId ?? current.endpointSpiffeId) : change.endpointSpiffeId,
      webRootsPem: profile === "https_web" ? (change.webRootsPem === null ? undefined : (change.webRootsPem ?? current.webRootsPem)) : (change.webRootsPem ?? undefined),
    };
    const now = this.deps.clock();
    const next: FederationRecord = { ...current, ...this.endpointParameters(td, merged), nextRefreshAt: now, updatedAt: now };
    if (change.trustBundle !== undefined) Object.assign(next, this.initialBundle(td, change.trustBundle));
    this.requireBootstrap(td, next);
    if (!(await this.deps.store.federations.update(next))) throw federationError("federation_not_found", `no federation relationship with ${td.name}`);
    await this.auditAdmin(AUDIT_EVENTS.federationUpdate, next, { bundleReplaced: change.trustBundle !== undefined });
    return next;
  }

  async delete(trustDomain: string): Promise<void> {
    const current = await this.get(trustDomain);
    if (!(await this.deps.store.federations.delete(current.trustDomain))) throw federationError("federation_not_found", `no federation relationship with ${trustDomain}`);
    await this.auditAdmin(AUDIT_EVENTS.federationDelete, current, {});
  }

  /** Fetches, judges and (when new) adopts the trust domain's bundle now; a refusal is thrown after it is recorded. */
  refresh(trustDomain: string, trigger: "admin" | "schedule" = "admin"): Promise<RefreshResult> {
    const name = TrustDomain.parse(trustDomain).name;
    const previous = this.running.get(name) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(() => this.refreshNow(name, trigger));
    // The tracker never rejects (the caller of `next` hears the refusal): no unhandled rejection.
    const tracked = next.catch(() => undefined).finally(() => {
      if (this.running.get(name) === tracked) this.running.delete(name);
    });
    this.running.set(name, tracked);
    return next;
  }

  /** The periodic task: every relationship whose time has come, one after the other. */
  async refreshDue(): Promise<{ refreshed: number; refused: number }> {
    let refreshed = 0;
    let refused = 0;
    for (const r of await this.deps.store.federations.due(this.deps.clock())) {
      try {
        await this.refresh(r.trustDomain, "schedule");
        refreshed++;
      } catch {
        refused++; // recorded and audited by refreshNow
      }
    }
    return { refreshed, refused };
  }

  /** The current bundles of these trust domains (those with none known yet are left out). */
  async bundles(trustDomains: Iterable<string>): Promise<ForeignBundle[]> {
    const out: ForeignBundle[] = [];
    for (const name of new Set(trustDomains)) {
      const r = await this.deps.store.federations.get(name);
      if (r?.bundle) out.push(this.parsedBundle(r.trustDomain, r.bundle));
    }
    return out;
  }

  async bundle(trustDomain: string): Promise<ForeignBundle> {
    const r = await this.get(trustDomain);
    if (!r.bundle) throw federationError("federation_not_found", `no bundle of ${r.trustDomain} is known yet (its endpoint has not been fetched)`);
    return this.parsedBundle(r.trustDomain, r.bundle);
  }

  /** Refuses to federate with an unknown trust domain (entries name only relationships that exist). */
  async requireRelationships(trustDomains: readonly string[]): Promise<string[]> {
    const names = [...new Set(trustDomains.map((t) => this.foreignTrustDomain(t).name))].sort();
    for (const name of names) {
      if (!(await this.deps.store.federations.get(name))) throw federationError("federation_not_found", `no federation relationship with ${name}: create it first`);
    }
    return names;
  }

  private async refreshNow(name: string, trigger: "admin" | "schedule"): Promise<RefreshResult> {
    const r = await this.get(name);
    const td = TrustDomain.parse(r.trustDomain);
    const started = this.deps.clock();
    let judged: JudgedBundle;
    try {
      const body = await fetchBundle(await this.endpointOf(r, td), { timeoutMs: this.deps.fetchTimeoutMs });
      judged = judgeForeignBundle(body, td, { json: r.bundle, sequence: r.bundleSequence });
    } catch (e) {
      const code = isHallmarkError(e) ? e.code : "federation_fetch_failed";
      const reason = isHallmarkError(e) ? e.message : "the fetch failed";
      const at = this.deps.clock();
      // The next try comes at the usual interval (§6.2: no aggressive retries), the held bundle untouched.
      await this.deps.store.federations.recordRefresh(r.trustDomain, { at, outcome: code, error: reason, nextRefreshAt: later(at, r.refreshHintSeconds) });
      await this.deps.audit.append({
        time: at,
        event: AUDIT_EVENTS.federationBundle,
        outcome: "refused",
        code,
        actor: trigger === "admin" ? "admin:socket" : "federation:refresh",
        spiffeId: td.idString,
        details: { trustDomain: td.name, endpoint: r.bundleEndpointUrl, profile: r.profile, reason, keptSequence: r.bundleSequence ?? null, trigger },
      });
      this.deps.log.warn({ trustDomain: td.name, code, reason }, "federation: foreign bundle refused; the last good one stays");
      throw isHallmarkError(e) ? e : new HallmarkError(code, reason, { cause: e });
    }
    const at = this.deps.clock();
    const nextRefreshAt = later(at, judged.refreshHintSeconds);
    await this.deps.store.federations.recordRefresh(r.trustDomain, {
      at,
      outcome: judged.changed ? "updated" : "unchanged",
      nextRefreshAt,
      ...(judged.changed ? { bundle: { json: judged.json, sequence: judged.sequence, refreshHintSeconds: judged.refreshHintSeconds } } : {}),
    });
    if (judged.changed) {
      await this.deps.audit.append({
        time: at,
        event: AUDIT_EVENTS.federationBundle,
        outcome: "success",
        actor: trigger === "admin" ? "admin:socket" : "federation:refresh",
        spiffeId: td.idString,
        details: {
          trustDomain: td.name,
          endpoint: r.bundleEndpointUrl,
          sequence: judged.sequence ?? null,
          previousSequence: r.bundleSequence ?? null,
          x509Authorities: judged.bundle.x509Authorities.length,
          jwtKids: judged.bundle.jwtAuthorities.map((a) => a.kid),
          fetchedInMs: at.getTime() - started.getTime(),
          trigger,
        },
      });
      this.deps.log.info({ trustDomain: td.name, sequence: judged.sequence }, "federation: foreign bundle updated");
    }
    return { trustDomain: td.name, outcome: judged.changed ? "updated" : "unchanged", sequence: judged.sequence, previousSequence: r.bundleSequence, nextRefreshAt };
  }

  /**
   * §5.2.2.4: a self-serving endpoint is authenticated with the latest bundle of its own trust
   * domain; another endpoint with the latest bundle of the endpoint ID's trust domain, known here
   * only through a federation relationship of its own.
   */
  private async endpointOf(r: FederationRecord, td: TrustDomain): Promise<BundleEndpoint> {
    if (r.profile === "https_web") return { profile: "https_web", url: r.bundleEndpointUrl, webRootsPem: r.webRootsPem };
    const endpointId = SpiffeId.parse(r.endpointSpiffeId ?? "");
    const endpointTd = endpointId.trustDomain;
    const source = endpointTd.equals(td) ? r : await this.deps.store.federations.get(endpointTd.name);
    const authorities = source?.bundle ? parseSpiffeBundle(source.bundle).x509Authorities : [];
    if (authorities.length === 0) {
      throw federationError("federation_endpoint_bundle_missing", `no X.509 authority of ${endpointTd.name} is known to authenticate ${endpointId}`);
    }
    return { profile: "https_spiffe", url: r.bundleEndpointUrl, endpointSpiffeId: endpointId.toString(), authorities };
  }

  private foreignTrustDomain(name: string): TrustDomain {
    const td = TrustDomain.parse(name);
    if (td.equals(this.deps.trustDomain)) throw federationError("federation_own_trust_domain", `${td.name} is this server's own trust domain`);
    return td;
  }

  /** The endpoint parameters, checked: https URL without userinfo; the profile's own parameters and none of the other's. */
  private endpointParameters(td: TrustDomain, input: NewFederation): Pick<FederationRecord, "bundleEndpointUrl" | "profile" | "endpointSpiffeId" | "webRootsPem"> {
    let url: URL;
    try {
      url = new URL(input.bundleEndpointUrl);
    } catch {
      throw federationError("federation_invalid", "the bundle endpoint URL is not a URL");
    }
    if (url.protocol !== "https:" || url.username || url.password) throw federationError("federation_invalid", "the bundle endpoint URL must be https:// without userinfo (SPIFFE Federation §5.2)");
    if (input.profile === "https_web") {
      if (input.endpointSpiffeId !== undefined) throw federationError("federation_invalid", "an endpoint SPIFFE ID belongs to the https_spiffe profile");
      if (input.webRootsPem !== undefined && pemBlocks(input.webRootsPem).length === 0) throw federationError("federation_invalid", "the web roots hold no PEM certificate");
      return { bundleEndpointUrl: url.toString(), profile: "https_web", endpointSpiffeId: undefined, webRootsPem: input.webRootsPem };
    }
    if (input.profile !== "https_spiffe") throw federationError("federation_invalid", "the profile is https_web or https_spiffe");
    if (input.webRootsPem !== undefined) throw federationError("federation_invalid", "web roots belong to the https_web profile");
    if (input.endpointSpiffeId === undefined) throw federationError("federation_invalid", `the https_spiffe profile needs the endpoint's SPIFFE ID (e.g. ${td.idString}/hallmark/server)`);
    const id = SpiffeId.parse(input.endpointSpiffeId);
    if (id.path === "") throw federationError("federation_invalid", "the endpoint SPIFFE ID names a workload, not a trust domain");
    return { bundleEndpointUrl: url.toString(), profile: "https_spiffe", endpointSpiffeId: id.toString(), webRootsPem: undefined };
  }

  private initialBundle(td: TrustDomain, json: string): Pick<FederationRecord, "bundle" | "bundleSequence" | "refreshHintSeconds"> {
    const judged = judgeForeignBundle(json, td);
    return { bundle: judged.json, bundleSequence: judged.sequence, refreshHintSeconds: judged.refreshHintSeconds };
  }

  /** A self-serving https_spiffe endpoint cannot be authenticated the first time without a bundle given out of band (§5.2.2.2). */
  private requireBootstrap(td: TrustDomain, r: FederationRecord): void {
    if (r.profile !== "https_spiffe" || r.bundle) return;
    if (SpiffeId.parse(r.endpointSpiffeId!).trustDomain.equals(td)) {
      throw federationError("federation_invalid", `the endpoint is in ${td.name} itself: give its current bundle (--trust-bundle-file) to authenticate the first fetch`);
    }
  }

  private parsedBundle(trustDomain: string, json: string): ForeignBundle {
    const hit = this.parsed.get(trustDomain);
    if (hit && hit.json === json) return hit;
    const fresh = { trustDomain, json, bundle: parseSpiffeBundle(json) };
    this.parsed.set(trustDomain, fresh);
    return fresh;
  }

  private async auditAdmin(event: string, r: FederationRecord, extra: Record<string, unknown>): Promise<void> {
    await this.deps.audit.append({
      time: this.deps.clock(),
      event,
      outcome: "success",
      actor: "admin:socket",
      spiffeId: TrustDomain.parse(r.trustDomain).idString,
      details: {
        trustDomain: r.trustDomain,
        endpoint: r.bundleEndpointUrl,
        profile: r.profile,
        endpointSpiffeId: r.endpointSpiffeId ?? null,
        webRoots: r.webRootsPem ? pemBlocks(r.webRootsPem).length : "default",
        sequence: r.bundleSequence ?? null,
        ...extra,
      },
    });
  }
}

/** When to fetch next: at the hint, kept within REFRESH_BOUNDS. */
export function refreshIntervalSeconds(hint: number | undefined): number {
  return Math.min(REFRESH_BOUNDS.maxSeconds, Math.max(REFRESH_BOUNDS.minSeconds, hint ?? REFRESH_BOUNDS.defaultSeconds));
}

function later(at: Date, hint: number | undefined): Date {
  return new Date(at.getTime() + refreshIntervalSeconds(hint) * 1000);
}
