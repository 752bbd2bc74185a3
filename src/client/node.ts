import { newClientKey } from "./csr.js";
import { ApiClient, expectOk, type ServerTls } from "./http.js";

/** A node's calls with its SVID over mutual TLS: renew, workload X.509-SVIDs, JWT-SVIDs. */
export class NodeClient {
  private readonly api: ApiClient;

  constructor(server: string, tls: Required<Pick<ServerTls, "certPem" | "keyPem" | "trustBundlePem">> & ServerTls) {
    this.api = new ApiClient(new URL(server), tls);
  }

  async fetchX509(spiffeId?: string) {
    const key = await newClientKey();
    const r = expectOk(
      await this.api.request("POST", "/v1/svids/x509", { csr: key.csrPem, ...(spiffeId ? { spiffe_id: spiffeId } : {}) }),
    ) as { spiffe_id: string; svid: { cert_chain_pem: string; expires_at: string; serial: string }; bundle_pem: string };
    return { spiffeId: r.spiffe_id, certChainPem: r.svid.cert_chain_pem, privateKeyPem: key.privateKeyPem, bundlePem: r.bundle_pem, expiresAt: r.svid.expires_at, serial: r.svid.serial };
  }

  async fetchJwt(audience: string[], spiffeId?: string) {
    return expectOk(
      await this.api.request("POST", "/v1/svids/jwt", { audience, ...(spiffeId ? { spiffe_id: spiffeId } : {}) }),
    ) as { spiffe_id: string; token: string; expires_at: string };
  }

  async renew() {
    const key = await newClientKey();
    const r = expectOk(await this.api.request("POST", "/v1/node/renew", { csr: key.csrPem })) as {
      spiffe_id: string;
      svid: { cert_chain_pem: string; expires_at: string };
      bundle_pem: string;
    };
    return { spiffeId: r.spiffe_id, certChainPem: r.svid.cert_chain_pem, privateKeyPem: key.privateKeyPem, bundlePem: r.bundle_pem, expiresAt: r.svid.expires_at };
  }

  async bundle() {
    return expectOk(await this.api.request("GET", "/v1/bundle")) as { bundle_pem: string; spiffe_bundle: unknown };
  }

  close(): void {
    this.api.close();
  }
}
