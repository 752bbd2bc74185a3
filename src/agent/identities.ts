import { type JWK, decodeProtectedHeader, importJWK, jwtVerify } from "jose";
import type { Logger } from "pino";
import type { NodeEntry } from "../client/node.js";
import { isHallmarkError } from "../errors.js";
import { pemBlocks } from "../pki/pem.js";
import { SpiffeId } from "../spiffe/id.js";
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

/**
 * WorkloadIdentities over the agent's parts: the entries the server says this node may serve
 * (EntrySync), the SVIDs fetched for them (SvidCache) and the bundle. An entry matches a caller
 * when it has at least one selector and all of them are among the caller's: an entry without
 * selectors would hand its identity to every process on the node, so it matches no workload.
 */
export class AgentIdentities implements WorkloadIdentities {
  private bundle: ServerBundle | undefined;
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
    for (const entry of unique(this.matching(selectors))) {
      try {
        const s = await this.cache.x509For(entry.spiffe_id);
        if (this.identity.removed) return [];
        out.push({ spiffeId: s.spiffeId, certChain: s.certChain, privateKey: s.privateKey, bundle: this.x509Bundle() ?? s.bundle, hint: entry.hint, expiresAt: s.expiresAt });
      } catch (e) {
        this.log.warn({ spiffeId: entry.spiffe_id, code: isHallmarkError(e) ? e.code : "error" }, "agent: no X.509-SVID for a matching entry");
      }
    }
    return out;
  }

  async jwtSvids(selectors: readonly string[], audience: readonly string[], spiffeId?: string): Promise<WorkloadJwtSvid[]> {
    const entries = unique(this.matching(selectors)).filter((e) => spiffeId === undefined || e.spiffe_id === spiffeId);
    const out: WorkloadJwtSvid[] = [];
    for (const entry of entries) {
      const s = await this.cache.jwtFor(entry.spiffe_id, audience);
      if (this.identity.removed) return [];
      out.push({ spiffeId: s.spiffeId, token: s.token, hint: entry.hint });
    }
    return out;
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
    return new Map([[this.trustDomainId, der]]);
  }

  async jwtBundles(): Promise<Map<string, Record<string, unknown>>> {
    return new Map([[this.trustDomainId, { keys: this.jwtKeys() }]]);
  }

  async validateJwtSvid(token: string, audience: string): Promise<{ spiffeId: string; claims: Record<string, unknown> }> {
    const invalid = (why: string) => agentError("jwt_svid_invalid", why);
    let kid: string | undefined;
    let alg: string | undefined;
    try {
      ({ kid, alg } = decodeProtectedHeader(token));
    } catch {
      throw invalid("the token is not a JWS");
    }
    if (!alg || !JWT_SVID_ALGORITHMS.includes(alg)) throw invalid(`the algorithm ${String(alg).slice(0, 16)} is not one JWT-SVIDs use`);
    const jwk = this.jwtKeys().find((k) => k.kid === kid);
    if (!jwk) throw invalid("no key of this trust domain's JWT bundle signed it");
    try {
      const { kid: _kid, use: _use, ...key } = jwk;
      const { payload } = await jwtVerify(token, await importJWK(key, alg), { audience, algorithms: [alg], requiredClaims: ["sub", "aud", "exp"] });
      const id = SpiffeId.parse(String(payload.sub ?? ""));
      if (id.trustDomain.idString !== this.trustDomainId) throw invalid(`the subject ${id} is not in this trust domain`);
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

  private x509Bundle(): Buffer[] | undefined {
    return this.bundle ? pemBlocks(this.bundle.bundlePem) : undefined;
  }

  private jwtKeys(): Array<JWK & { kid?: string; use?: string }> {
    return this.bundleKeys("jwt-svid");
  }

  /** The SPIFFE bundle's keys of one `use` (jwt-svid, wit-svid), as the server published them. */
  private bundleKeys(use: string): Array<JWK & { kid?: string; use?: string }> {
    const keys = (this.bundle?.spiffeBundle.keys ?? []) as Array<JWK & { use?: string }>;
    return keys.filter((k) => typeof k === "object" && k !== null && k.use === use && typeof k.kid === "string");
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

/** One entry per SPIFFE ID: several entries may name the same identity. */
function unique(entries: NodeEntry[]): NodeEntry[] {
  const seen = new Map<string, NodeEntry>();
  for (const e of entries) if (!seen.has(e.spiffe_id)) seen.set(e.spiffe_id, e);
  return [...seen.values()];
}
