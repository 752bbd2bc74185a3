import { type JWK, decodeJwt, decodeProtectedHeader, importJWK, jwtVerify } from "jose";
import type { Logger } from "pino";
import type { NodeEntry } from "../client/node.js";
import { isHallmarkError } from "../errors.js";
import { parseSpiffeBundle } from "../issuer/bundle.js";
import { pemBlocks } from "../pki/pem.js";
import { SpiffeId, TrustDomain } from "../spiffe/id.js";
import type { WorkloadIdentities, WorkloadJwtSvid, WorkloadWitSvid, WorkloadX509Svid } from "../workload-api/ports.js";
import type { EntrySync } from "./entry-sync.js";
import { agentError } from "./errors.js";
import type { NodeIdentity } from "./node-identity.js";
import type { SvidCache } from "./svid-cache.js";

/** JWT-SVID §3: asymmetric signatures only (never `none`, never HMAC with a public key). */
const JWT_SVID_ALGORITHMS = ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];

/** The server's bundle as GET /v1/bundle gives it: PEM, and the SPIFFE bundle (JWKS). */
export interface ServerBundle {
  bundlePem: string;
  spiffeBundle: { keys?: unknown[]; spiffe_sequence?: number } & Record<string, unknown>;
}

type BundleKey = JWK & { kid?: string; use?: string };

/** A foreign trust domain's bundle as the agent holds it (GET /v1/node/federated-bundles). */
interface HeldForeignBundle {
  /** The trust domain's name (partner.net). */
  name: string;
  /** The SPIFFE bundle as the server sent it: compared to notice a change. */
  json: string;
  x509Authorities: Buffer[];
  jwtKeys: BundleKey[];
}

/**
 * WorkloadIdentities over the agent's parts: the entries the server says this node may serve
 * (EntrySync), the SVIDs fetched for them (SvidCache) and the bundle. An entry matches a caller
 * when it has at least one selector and all of them are among the caller's: an entry without
 * selectors would hand its identity to every process on the node, so it matches no workload.
 */
export class AgentIdentities implements WorkloadIdentities {
  private bundle: ServerBundle | undefined;
  /** Trust domain ID (spiffe://td) → its bundle, for the domains this node's entries federate with. */
  private federated = new Map<string, HeldForeignBundle>();
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly identity: NodeIdentity,
    private readonly sync: EntrySync,
    private readonly cache: SvidCache,
    private readonly log: Logger,
  ) {
    sync.onChange(() => this.changed());
    cache.onChange(() => this.changed());
    identity.onRemoved(() => {
      cache.clear();
      this.changed();
    });
  }

  /** Adopts the server's bundle; fires onChange when it differs from the one held. */
  setBundle(next: ServerBundle): void {
    const same = this.bundle && this.bundle.bundlePem === next.bundlePem && JSON.stringify(this.bundle.spiffeBundle) === JSON.stringify(next.spiffeBundle);
    this.bundle = next;
    if (!same) this.changed();
  }

  /**
   * Adopts the foreign bundles the server sent (trust domain name → SPIFFE bundle): those of the
   * domains this node's entries federate with. A bundle that does not parse is left out (and the
   * one held before, if any, kept): the server judged it, so this is a bug to log, not to serve.
   * Fires onChange when any bundle was added, changed or dropped.
   */
  setFederatedBundles(bundles: Record<string, Record<string, unknown>>): void {
    const next = new Map<string, HeldForeignBundle>();
    for (const [name, doc] of Object.entries(bundles)) {
      const id = trustDomainIdOf(name);
      if (id === undefined) continue;
      const json = JSON.stringify(doc);
      const held = this.federated.get(id);
      try {
        next.set(id, held?.json === json ? held : { name, json, x509Authorities: parseSpiffeBundle(doc).x509Authorities, jwtKeys: keysOfUse(doc, "jwt-svid") });
      } catch (e) {
        this.log.warn({ trustDomain: name, code: isHallmarkError(e) ? e.code : "error" }, "agent: leaving out a federated bundle that does not parse");
        if (held) next.set(id, held);
      }
    }
    const same = next.size === this.federated.size && [...next].every(([td, b]) => this.federated.get(td)?.json === b.json);
    this.federated = next;
    if (!same) this.changed();
  }

  /** Trust domain names the node's entries federate with (what GET /v1/node/federated-bundles should cover). */
  federatedTrustDomains(): Set<string> {
    return new Set([...this.sync.entries.values()].flatMap((e) => e.federates_with ?? []));
  }

  /** Trust domain names whose bundle is held now. */
  heldFederatedTrustDomains(): Set<string> {
    return new Set([...this.federated.values()].map((b) => b.name));
  }

  private get trustDomainId(): string {
    return SpiffeId.parse(this.identity.spiffeId).trustDomain.idString;
  }

  private matching(selectors: readonly string[]): NodeEntry[] {
    if (this.identity.removed) return [];
    const have = new Set(selectors);
    return [...this.sync.entries.values()].filter((e) => e.selectors.length > 0 && e.selectors.every((s) => have.has(s)));
  }

  async x509Svids(selectors: readonly string[]): Promise<WorkloadX509Svid[]> {
    const out: WorkloadX509Svid[] = [];
    const matching = this.matching(selectors);
    for (const entry of unique(matching)) {
      try {
        const s = await this.cache.x509For(entry.spiffe_id);
        if (this.identity.removed) return [];
        out.push({
          spiffeId: s.spiffeId,
          certChain: s.certChain,
          privateKey: s.privateKey,
          bundle: this.x509Bundle() ?? s.bundle,
          hint: entry.hint,
          expiresAt: s.expiresAt,
          federatesWith: federatesWithOf(matching, entry.spiffe_id),
        });
      } catch (e) {
        this.log.warn({ spiffeId: entry.spiffe_id, code: isHallmarkError(e) ? e.code : "error" }, "agent: no X.509-SVID for a matching entry");
      }
    }
    return out;
  }

  async jwtSvids(selectors: readonly string[], audience: readonly string[], spiffeId?: string, admitFetches?: (n: number) => void): Promise<WorkloadJwtSvid[]> {
    const entries = unique(this.matching(selectors)).filter((e) => spiffeId === undefined || e.spiffe_id === spiffeId);
    const toFetch = entries.filter((entry) => !this.cache.holdsJwt(entry.spiffe_id, audience)).length;
    if (toFetch > 0) admitFetches?.(toFetch);
    // Asked for together, so that the ones not cached go to the server in one batch request.
    const svids = await Promise.all(entries.map((entry) => this.cache.jwtFor(entry.spiffe_id, audience)));
    if (this.identity.removed) return [];
    return svids.map((s, i) => ({ spiffeId: s.spiffeId, token: s.token, hint: entries[i]!.hint }));
  }

  async witSvids(selectors: readonly string[]): Promise<WorkloadWitSvid[]> {
    const out: WorkloadWitSvid[] = [];
    for (const entry of unique(this.matching(selectors))) {
      try {
        const s = await this.cache.witFor(entry.spiffe_id);
        if (this.identity.removed) return [];
        out.push({ spiffeId: s.spiffeId, token: s.token, privateKeyJwk: s.privateKeyJwk, hint: entry.hint, expiresAt: s.expiresAt });
      } catch (e) {
        this.log.warn({ spiffeId: entry.spiffe_id, code: isHallmarkError(e) ? e.code : "error" }, "agent: no WIT-SVID for a matching entry");
      }
    }
    return out;
  }

  async witBundles(): Promise<Map<string, Record<string, unknown>>> {
    return new Map([[this.trustDomainId, { keys: this.bundleKeys("wit-svid") }]]);
  }

  async x509Bundles(): Promise<Map<string, Buffer[]>> {
    const der = this.x509Bundle() ?? pemBlocks(this.identity.trustBundlePem);
    return new Map([[this.trustDomainId, der], ...[...this.federated].map(([td, b]) => [td, b.x509Authorities] as const)]);
  }

  async jwtBundles(): Promise<Map<string, Record<string, unknown>>> {
    return new Map([[this.trustDomainId, { keys: this.jwtKeys() }], ...[...this.federated].map(([td, b]) => [td, { keys: b.jwtKeys }] as const)]);
  }

  async validateJwtSvid(token: string, audience: string, federatedWith: ReadonlySet<string> = new Set()): Promise<{ spiffeId: string; claims: Record<string, unknown> }> {
    const invalid = (why: string) => agentError("jwt_svid_invalid", why);
    let kid: string | undefined;
    let alg: string | undefined;
    let claimedSub: unknown;
    try {
      ({ kid, alg } = decodeProtectedHeader(token));
      claimedSub = decodeJwt(token).sub;
    } catch {
      throw invalid("the token is not a JWS");
    }
    if (!alg || !JWT_SVID_ALGORITHMS.includes(alg)) throw invalid(`the algorithm ${String(alg).slice(0, 16)} is not one JWT-SVIDs use`);
    // The subject's trust domain (unverified yet) only chooses which bundle verifies the token: a
    // foreign one only when the caller's entries federate with that domain.
    const domain = this.trustDomainOfSubject(claimedSub);
    const keys = this.jwtKeysFor(domain, federatedWith);
    const jwk = keys.find((k) => k.kid === kid);
    if (!jwk) throw invalid(`no key of the JWT bundle of ${domain} signed it`);
    try {
      const { kid: _kid, use: _use, ...key } = jwk;
      const { payload } = await jwtVerify(token, await importJWK(key, alg), { audience, algorithms: [alg], requiredClaims: ["sub", "aud", "exp"] });
      const id = SpiffeId.parse(String(payload.sub ?? ""));
      if (id.trustDomain.idString !== domain) throw invalid(`the subject ${id} is not in ${domain}`);
      return { spiffeId: id.toString(), claims: payload as Record<string, unknown> };
    } catch (e) {
      if (isHallmarkError(e) && e.code === "jwt_svid_invalid") throw e;
      throw invalid(isHallmarkError(e) ? `the subject is not a SPIFFE ID: ${e.message}` : (e as Error).message);
    }
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The trust domain ID of a token's `sub`, or a refusal when it is not a SPIFFE ID. */
  private trustDomainOfSubject(sub: unknown): string {
    try {
      return SpiffeId.parse(typeof sub === "string" ? sub : "").trustDomain.idString;
    } catch (e) {
      throw agentError("jwt_svid_invalid", `the subject is not a SPIFFE ID: ${isHallmarkError(e) ? e.message : "unreadable"}`);
    }
  }

  /** The JWT authorities that may verify a JWT-SVID of `domain` for a caller federating with `federatedWith`. */
  private jwtKeysFor(domain: string, federatedWith: ReadonlySet<string>): BundleKey[] {
    if (domain === this.trustDomainId) return this.jwtKeys();
    if (!federatedWith.has(domain)) throw agentError("jwt_svid_invalid", `the caller's registration entries do not federate with ${domain}`);
    const held = this.federated.get(domain);
    if (!held) throw agentError("jwt_svid_invalid", `no bundle of ${domain} is held yet`);
    return held.jwtKeys;
  }

  private x509Bundle(): Buffer[] | undefined {
    return this.bundle ? pemBlocks(this.bundle.bundlePem) : undefined;
  }

  private jwtKeys(): BundleKey[] {
    return this.bundleKeys("jwt-svid");
  }

  private bundleKeys(use: string): BundleKey[] {
    return this.bundle ? keysOfUse(this.bundle.spiffeBundle, use) : [];
  }

  private changed(): void {
    for (const l of this.listeners) {
      try {
        l();
      } catch (e) {
        this.log.error({ err: e }, "agent: an identity listener failed");
      }
    }
  }
}

/** A SPIFFE bundle's keys of one `use` (jwt-svid, wit-svid) that carry a `kid`, as published. */
function keysOfUse(spiffeBundle: Record<string, unknown>, use: string): BundleKey[] {
  const keys = (Array.isArray(spiffeBundle.keys) ? spiffeBundle.keys : []) as BundleKey[];
  return keys.filter((k) => typeof k === "object" && k !== null && k.use === use && typeof k.kid === "string");
}

/** Trust domain IDs the entries naming `spiffeId` federate with (all of them: unique() keeps only the first entry). */
function federatesWithOf(entries: readonly NodeEntry[], spiffeId: string): string[] {
  const names = new Set(entries.filter((e) => e.spiffe_id === spiffeId).flatMap((e) => e.federates_with ?? []));
  return [...names].sort().flatMap((n) => trustDomainIdOf(n) ?? []);
}

/** `spiffe://<name>`, or undefined for a name that is not a trust domain (the server never sends one). */
function trustDomainIdOf(name: string): string | undefined {
  try {
    return TrustDomain.parse(name).idString;
  } catch {
    return undefined;
  }
}

/** One entry per SPIFFE ID: several entries may name the same identity. */
function unique(entries: NodeEntry[]): NodeEntry[] {
  const seen = new Map<string, NodeEntry>();
  for (const e of entries) if (!seen.has(e.spiffe_id)) seen.set(e.spiffe_id, e);
  return [...seen.values()];
}
