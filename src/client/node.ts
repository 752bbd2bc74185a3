import { HallmarkError } from "../errors.js";
import { newClientKey } from "./csr.js";
import { ApiClient, expectOk, type ServerTls } from "./http.js";
import type { ServerTarget } from "./server-list.js";
import { TrustBundle } from "./trust-bundle.js";

/** A JWT-SVID as POST /v1/svids/jwt (and each result of its batch) answers it. */
export interface FetchedJwt {
  spiffe_id: string;
  token: string;
  expires_at: string;
  /** Foreign trust domain name → its JWT authorities (JWKS), for an entry that federates (absent from servers before issue 14). */
  federated_jwt_bundles?: Record<string, { keys: Array<Record<string, unknown>> }>;
  log_index?: number;
}

/** An entry as GET /v1/node/entries sends it (src/api/public-routes.ts, nodeEntry). */
export interface NodeEntry {
  id: string;
  spiffe_id: string;
  selectors: string[];
  x509_ttl_seconds: number | null;
  jwt_ttl_seconds: number | null;
  dns_names: string[];
  hint: string;
  /** Foreign trust domains whose bundles this entry's workloads receive (absent from servers before issue 14). */
  federates_with?: string[] | undefined;
}

export type NodeEntriesAnswer =
  | { full: true; revision: number; entries: NodeEntry[]; next_page?: string; bundle_pem: string }
  | { full: false; revision: number; more: boolean; changes: Array<{ op: "created"; entry: NodeEntry } | { op: "deleted"; id: string }>; bundle_pem: string };

/** Requests per batch call: the server's MAX_X509_BATCH (src/api/public-routes.ts). */
export const X509_BATCH_SIZE = 64;
/** The most JWT-SVIDs POST /v1/svids/jwt/batch takes in one request. */
export const JWT_BATCH_SIZE = 64;

export interface FetchedX509 {
  spiffeId: string;
  certChainPem: string;
  privateKeyPem: string;
  bundlePem: string;
  expiresAt: string;
  serial: string;
  /** Foreign trust domain name → its X.509 authorities (PEM), for an entry that federates. */
  federatedBundles: Record<string, string>;
  /** The issuance's leaf in the transparency log (absent from servers before issue 12). */
  logIndex?: number | undefined;
}

/**
 * A node's calls with its SVID (over mutual TLS, or with channel-bound proofs for a TPM-resident
 * key): renew, workload X.509-SVIDs, JWT-SVIDs.
 */
export class NodeClient {
  private readonly api: ApiClient;
  private readonly trust: TrustBundle;

  constructor(
    /** One server or several replicas (src/client/server-list.ts). */
    server: ServerTarget,
    /** The SVID as certPem and keyPem (mutual TLS), or as nodeProof (a key in hardware: channel-bound proofs). */
    tls: Required<Pick<ServerTls, "trustBundlePem">> & ServerTls,
    /** Rewritten whenever the server sends a newer bundle (see TrustBundle). */
    trustBundleFile?: string,
  ) {
    this.api = new ApiClient(server, tls);
    this.trust = new TrustBundle(tls.trustBundlePem, trustBundleFile);
  }

  /** The bundle this client trusts now: the one it was given, or a newer one the server sent. */
  get trustBundlePem(): string {
    return this.trust.pem;
  }

  async fetchX509(spiffeId?: string): Promise<FetchedX509> {
    const key = await newClientKey();
    const r = (await this.call("POST", "/v1/svids/x509", { csr: key.csrPem, ...(spiffeId ? { spiffe_id: spiffeId } : {}) })) as {
      spiffe_id: string;
      svid: { cert_chain_pem: string; expires_at: string; serial: string };
      bundle_pem: string;
      federated_bundles?: Record<string, string>;
      log_index?: number;
    };
    return {
      spiffeId: r.spiffe_id,
      certChainPem: r.svid.cert_chain_pem,
      privateKeyPem: key.privateKeyPem,
      bundlePem: r.bundle_pem,
      expiresAt: r.svid.expires_at,
      serial: r.svid.serial,
      federatedBundles: r.federated_bundles ?? {},
      logIndex: r.log_index,
    };
  }

  /**
   * X.509-SVIDs for several SPIFFE IDs in one request (POST /v1/svids/x509/batch, at most 64), a
   * fresh key for each; a refused one comes back as its HallmarkError, in its place.
   */
  async fetchX509Batch(spiffeIds: readonly string[]): Promise<Array<FetchedX509 | HallmarkError>> {
    const keys = await Promise.all(spiffeIds.map(() => newClientKey()));
    const r = (await this.call("POST", "/v1/svids/x509/batch", { requests: spiffeIds.map((id, i) => ({ csr: keys[i]!.csrPem, spiffe_id: id })) })) as {
      results: Array<{
        spiffe_id: string;
        svid?: { cert_chain_pem: string; expires_at: string; serial: string };
        federated_bundles?: Record<string, string>;
        error?: { code: string; detail: string };
      }>;
      bundle_pem: string;
    };
    return spiffeIds.map((id, i) => {
      const one = r.results[i];
      if (!one?.svid) return new HallmarkError(one?.error?.code ?? "unavailable", one?.error?.detail ?? `no result for ${id}`);
      return {
        spiffeId: one.spiffe_id,
        certChainPem: one.svid.cert_chain_pem,
        privateKeyPem: keys[i]!.privateKeyPem,
        bundlePem: r.bundle_pem,
        expiresAt: one.svid.expires_at,
        serial: one.svid.serial,
        federatedBundles: one.federated_bundles ?? {},
      };
    });
  }

  async fetchJwt(audience: string[], spiffeId?: string): Promise<FetchedJwt> {
    return (await this.call("POST", "/v1/svids/jwt", { audience, ...(spiffeId ? { spiffe_id: spiffeId } : {}) })) as FetchedJwt;
  }

  /**
   * JWT-SVIDs for several (SPIFFE ID, audience) pairs in one request (POST /v1/svids/jwt/batch, at
   * most 64); a refused one comes back as its HallmarkError, in its place.
   */
  async fetchJwtBatch(requests: readonly { spiffeId: string; audience: readonly string[] }[]): Promise<Array<FetchedJwt | HallmarkError>> {
    const r = (await this.call("POST", "/v1/svids/jwt/batch", { requests: requests.map((q) => ({ audience: q.audience, spiffe_id: q.spiffeId })) })) as {
      results: Array<FetchedJwt & { error?: { code: string; detail: string } }>;
    };
    return requests.map((q, i) => {
      const one = r.results[i];
      if (!one?.token) return new HallmarkError(one?.error?.code ?? "unavailable", one?.error?.detail ?? `no result for ${q.spiffeId}`);
      return one;
    });
  }

  /** A WIT-SVID binding `publicKeyJwk` (a public JWK with `alg`; the private key stays with the caller). */
  async fetchWit(publicKeyJwk: Record<string, unknown>, spiffeId?: string) {
    return (await this.call("POST", "/v1/svids/wit", { public_key_jwk: publicKeyJwk, ...(spiffeId ? { spiffe_id: spiffeId } : {}) })) as {
      spiffe_id: string;
      token: string;
      expires_at: string;
    };
  }

  async renew() {
    const key = await newClientKey();
    const r = (await this.call("POST", "/v1/node/renew", { csr: key.csrPem })) as {
      spiffe_id: string;
      svid: { cert_chain_pem: string; expires_at: string };
      bundle_pem: string;
      log_index?: number;
    };
    return { spiffeId: r.spiffe_id, certChainPem: r.svid.cert_chain_pem, privateKeyPem: key.privateKeyPem, bundlePem: r.bundle_pem, expiresAt: r.svid.expires_at, logIndex: r.log_index };
  }

  /**
   * GET /v1/node/entries: the full list (a page of it), or the changes since `since`; with
   * `waitSeconds` too, the server holds an answer with no change until an entry changes (long poll).
   */
  async entries(query: { since?: number | undefined; pageAfter?: string | undefined; waitSeconds?: number | undefined } = {}): Promise<NodeEntriesAnswer> {
    const q = new URLSearchParams();
    if (query.since !== undefined) q.set("since", String(query.since));
    if (query.since !== undefined && query.waitSeconds) q.set("wait", String(query.waitSeconds));
    if (query.pageAfter !== undefined) q.set("page_after", query.pageAfter);
    return (await this.call("GET", `/v1/node/entries${q.size ? `?${q}` : ""}`)) as NodeEntriesAnswer;
  }

  /** GET /v1/node/federated-bundles: trust domain name → the SPIFFE bundle, for the domains this node's entries federate with. */
  async federatedBundles(): Promise<Record<string, Record<string, unknown>>> {
    return ((await this.call("GET", "/v1/node/federated-bundles")) as { bundles: Record<string, Record<string, unknown>> }).bundles;
  }

  async bundle() {
    return (await this.call("GET", "/v1/bundle")) as { bundle_pem: string; spiffe_bundle: unknown };
  }

  /**
   * One call; a bundle in the answer is adopted for the next connections (and written to the
   * bundle file): the answer came over TLS verified against the bundle this client held.
   */
  private async call(method: string, path: string, body?: unknown): Promise<unknown> {
    const answer = expectOk(await this.api.request(method, path, body));
    const bundle = (answer as { bundle_pem?: unknown } | undefined)?.bundle_pem;
    if (typeof bundle === "string" && this.trust.adopt(bundle)) this.api.setTrustBundle(bundle);
    return answer;
  }

  close(): void {
    this.api.close();
  }
}
