import { createPrivateKey } from "node:crypto";
import { createLocalJWKSet, exportJWK, generateKeyPair, type JSONWebKeySet, jwtVerify } from "jose";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { NodeClient } from "../../src/client/node.js";
import { HallmarkError } from "../../src/errors.js";
import { pemBlocks } from "../../src/pki/pem.js";
import type { WorkloadIdentities, WorkloadWitSvid, WorkloadX509Svid } from "../../src/workload-api/ports.js";
import { startTestServer, type TestServer } from "./server.js";

export const TD = "spiffe://example.org";

/** One registration entry as the test backend holds it: what it matches and the SVID the real server issued for it. */
interface HeldEntry {
  selectors: string[];
  svid: WorkloadX509Svid;
}

/**
 * The WorkloadIdentities port backed by what a real Hallmark server issued to a real node (the
 * agent's cache stands in). `entries` is keyed by any name, so two entries may carry the same
 * SPIFFE ID or hint; they are served in insertion order, as the agent serves its entries.
 */
export class TestIdentities implements WorkloadIdentities {
  readonly entries = new Map<string, HeldEntry>();
  private listeners = new Set<() => void>();
  /** One WIT-SVID per identity, kept (the agent's cache renews at half-life; the tests do not wait that long). */
  private readonly wits = new Map<string, Promise<WorkloadWitSvid>>();
  constructor(
    private readonly node: NodeClient,
    private readonly jwks: JSONWebKeySet,
    private readonly bundle: Buffer[],
    private readonly witJwks: JSONWebKeySet,
  ) {}
  private matching(selectors: readonly string[]) {
    return [...this.entries.values()].filter((e) => e.selectors.every((s) => selectors.includes(s)));
  }
  async x509Svids(selectors: readonly string[]) {
    return this.matching(selectors).map((e) => e.svid);
  }
  async jwtSvids(selectors: readonly string[], audience: readonly string[], spiffeId?: string, admitFetches?: (n: number) => void) {
    const mine = this.matching(selectors).filter((e) => !spiffeId || e.svid.spiffeId === spiffeId);
    // No cache here: every one is fetched from the server.
    if (mine.length > 0) admitFetches?.(mine.length);
    return Promise.all(
      mine.map(async (e) => ({ spiffeId: e.svid.spiffeId, token: (await this.node.fetchJwt([...audience], e.svid.spiffeId)).token, hint: e.svid.hint })),
    );
  }
  async witSvids(selectors: readonly string[]) {
    return Promise.all(this.matching(selectors).map(async (e) => ({ ...(await this.wit(e.svid.spiffeId)), hint: e.svid.hint })));
  }
  private wit(spiffeId: string): Promise<WorkloadWitSvid> {
    let w = this.wits.get(spiffeId);
    if (!w) {
      w = (async () => {
        const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
        const r = await this.node.fetchWit({ ...(await exportJWK(publicKey)), alg: "ES256" }, spiffeId);
        const privateKeyJwk: Record<string, unknown> = { ...(await exportJWK(privateKey)), alg: "ES256" };
        return { spiffeId: r.spiffe_id, token: r.token, privateKeyJwk, hint: "", expiresAt: new Date(r.expires_at) };
      })();
      this.wits.set(spiffeId, w);
    }
    return w;
  }
  async witBundles() {
    return new Map([[TD, this.witJwks as unknown as Record<string, unknown>]]);
  }
  async x509Bundles() {
    return new Map([[TD, this.bundle]]);
  }
  async jwtBundles() {
    return new Map([[TD, this.jwks as unknown as Record<string, unknown>]]);
  }
  async validateJwtSvid(token: string, audience: string) {
    try {
      const { payload } = await jwtVerify(token, createLocalJWKSet(this.jwks), { audience });
      return { spiffeId: String(payload.sub), claims: payload as Record<string, unknown> };
    } catch (e) {
      throw new HallmarkError("workload_jwt_invalid", "the JWT-SVID does not verify", { cause: e });
    }
  }
  onChange(listener: () => void) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  changed() {
    for (const l of this.listeners) l();
  }
}

/** A SPIFFE bundle's JWT authorities as a plain JWKS: jose only accepts keys whose `use` is absent or "sig". */
export function jwtKeys(spiffeBundle: JSONWebKeySet): JSONWebKeySet {
  return { keys: spiffeBundle.keys.filter((k) => k.use === "jwt-svid").map(({ use: _use, ...k }) => k) };
}

export interface WorkloadBackend {
  server: TestServer;
  node: NodeClient;
  identities: TestIdentities;
  admin(method: string, path: string, body?: unknown): Promise<unknown>;
  /** Registers an entry on the server, has the node fetch its SVID, and holds it under `key` (default: the SPIFFE ID). */
  addEntry(spiffeId: string, selectors: string[], options?: { hint?: string; key?: string }): Promise<void>;
  close(): Promise<void>;
}

/**
 * A real server with SoftHSM2, a node admitted with a join token, and TestIdentities serving what
 * that node fetched: the backend of a Workload API under test, with no agent process.
 */
export async function startWorkloadBackend(nodeId = `${TD}/node/workload-host`): Promise<WorkloadBackend> {
  const server = await startTestServer();
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  const bundlePem = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: nodeId, ttl_seconds: 600 })) as { token: string };
  const svid = await attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer: joinTokenProducer(token) });
  const node = new NodeClient(server.url, { certPem: svid.certChainPem, keyPem: svid.privateKeyPem!, trustBundlePem: bundlePem });
  const spiffeBundle = (await node.bundle()).spiffe_bundle as JSONWebKeySet;
  // The WIT keys exactly as the SPIFFE bundle publishes them (use wit-svid, kid).
  const witJwks = { keys: spiffeBundle.keys.filter((k) => k.use === "wit-svid") };
  const identities = new TestIdentities(node, jwtKeys(spiffeBundle), pemBlocks(bundlePem), witJwks);
  return {
    server,
    node,
    identities,
    admin,
    async addEntry(spiffeId, selectors, options = {}) {
      await admin("POST", "/admin/entries", { parent_id: nodeId, spiffe_id: spiffeId, selectors, ...(options.hint ? { hint: options.hint } : {}) });
      const s = await node.fetchX509(spiffeId);
      identities.entries.set(options.key ?? spiffeId, {
        selectors,
        svid: {
          spiffeId: s.spiffeId,
          certChain: pemBlocks(s.certChainPem),
          privateKey: createPrivateKey(s.privateKeyPem).export({ type: "pkcs8", format: "der" }),
          bundle: pemBlocks(s.bundlePem),
          hint: options.hint ?? "",
          expiresAt: new Date(s.expiresAt),
          federatesWith: [],
        },
      });
    },
    async close() {
      node.close();
      await server.destroy();
    },
  };
}
