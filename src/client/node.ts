import { newClientKey } from "./csr.js";
import { ApiClient, expectOk, type ServerTls } from "./http.js";
import { TrustBundle } from "./trust-bundle.js";

/** A node's calls with its SVID over mutual TLS: renew, workload X.509-SVIDs, JWT-SVIDs. */
export class NodeClient {
  private readonly api: ApiClient;
  private readonly trust: TrustBundle;

  constructor(
    server: string,
    tls: Required<Pick<ServerTls, "certPem" | "keyPem" | "trustBundlePem">> & ServerTls,
    /** Rewritten whenever the server sends a newer bundle (see TrustBundle). */
    trustBundleFile?: string,
  ) {
    this.api = new ApiClient(new URL(server), tls);
    this.trust = new TrustBundle(tls.trustBundlePem, trustBundleFile);
  }

  /** The bundle this client trusts now: the one it was given, or a newer one the server sent. */
  get trustBundlePem(): string {
    return this.trust.pem;
  }

  async fetchX509(spiffeId?: string) {
    const key = await newClientKey();
    const r = (await this.call("POST", "/v1/svids/x509", { csr: key.csrPem, ...(spiffeId ? { spiffe_id: spiffeId } : {}) })) as { spiffe_id: string; svid: { cert_chain_pem: string; expires_at: string; serial: string }; bundle_pem: string };
    return { spiffeId: r.spiffe_id, certChainPem: r.svid.cert_chain_pem, privateKeyPem: key.privateKeyPem, bundlePem: r.bundle_pem, expiresAt: r.svid.expires_at, serial: r.svid.serial };
  }

  async fetchJwt(audience: string[], spiffeId?: string) {
    return (await this.call("POST", "/v1/svids/jwt", { audience, ...(spiffeId ? { spiffe_id: spiffeId } : {}) })) as {
      spiffe_id: string;
      token: string;
      expires_at: string;
    };
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
    };
    return { spiffeId: r.spiffe_id, certChainPem: r.svid.cert_chain_pem, privateKeyPem: key.privateKeyPem, bundlePem: r.bundle_pem, expiresAt: r.svid.expires_at };
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
