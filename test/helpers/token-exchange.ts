import { randomUUID } from "node:crypto";
import { type CryptoKey, SignJWT, exportJWK } from "jose";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { NodeClient } from "../../src/client/node.js";
import { databasePath } from "../../src/config/server.js";
import { TOKEN_EXCHANGE_GRANT } from "../../src/oauth/token-request.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { AuditRecord } from "../../src/store/types.js";
import { type HttpsResult, httpsRaw } from "./https.js";
import { admitJoinTokenNode } from "./nodes.js";
import { startTestServer, type TestServer } from "./server.js";
import { type TestIdp, signedToken, startTestIdp } from "./test-idp.js";
import { tempDir } from "./tmp.js";

/**
 * The parts of a token-exchange test: a test IdP (JWKS over HTTPS on loopback, trusted through
 * caFile) configured as a subject issuer of a real Hallmark server, workloads with real SVIDs
 * from real nodes, and the audit log read beside the server.
 */

export const TD = "spiffe://example.org";
export const IDP_ISSUER = "https://idp.example.com";
/** What the IdP's tokens are for: the audience Hallmark's configuration accepts from that issuer. */
export const HALLMARK_AUDIENCE = "https://hallmark.example.org";
export const PERSON = "alice@example.com";
export { TOKEN_EXCHANGE_GRANT as TOKEN_EXCHANGE, TOKEN_TYPES as TOKEN_TYPE } from "../../src/oauth/token-request.js";

export interface Workload {
  spiffeId: string;
  certPem: string;
  keyPem: string;
  node: NodeClient;
  nodeId: string;
}

export interface ExchangeWorld {
  server: TestServer;
  idp: TestIdp;
  bundlePem: string;
  /** The server's issuer (its URL): `iss` of its access tokens. */
  issuer: string;
  tokenEndpoint: string;
  admin(method: string, path: string, body?: unknown): Promise<unknown>;
  workloadOn(nodeId: string, spiffeId: string): Promise<Workload>;
  /** A delegation made through the admin API; returns its id. */
  delegate(d: { actor: string; subject_issuer?: string; subject?: string; scopes: string[]; audiences: string[]; max_ttl_seconds?: number; require_dpop?: boolean; require_attestor?: string }): Promise<string>;
  close(): Promise<void>;
}

export async function startExchangeWorld(o: { dpop: { required: boolean; nonce: boolean }; maxActDepth?: number }): Promise<ExchangeWorld> {
  const dir = tempDir("token-exchange-idp");
  const idp = await startTestIdp(dir.path);
  const server = await startTestServer({
    overrides: {
      delegation: {
        subjectIssuers: [{ issuer: IDP_ISSUER, audiences: [HALLMARK_AUDIENCE], jwksUri: idp.jwksUri, caFile: idp.caFile, jwksRefresh: 300 }],
        maxActDepth: o.maxActDepth ?? 4,
        dpop: { required: o.dpop.required, iatWindow: 60, nonce: o.dpop.nonce },
      },
    },
  });
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  const bundlePem = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  const nodes: NodeClient[] = [];
  return {
    server,
    idp,
    bundlePem,
    issuer: server.url,
    tokenEndpoint: `${server.url}/oauth2/token`,
    admin,
    async workloadOn(nodeId, spiffeId) {
      const svid = await admitJoinTokenNode(server, nodeId);
      const node = new NodeClient(server.url, { certPem: svid.certChainPem, keyPem: svid.privateKeyPem!, trustBundlePem: bundlePem });
      nodes.push(node);
      await admin("POST", "/admin/entries", { parent_id: nodeId, spiffe_id: spiffeId, selectors: ["unix:uid:1000"] });
      const w = await node.fetchX509(spiffeId);
      return { spiffeId, certPem: w.certChainPem, keyPem: w.privateKeyPem, node, nodeId };
    },
    async delegate(d) {
      const r = (await admin("POST", "/admin/delegations", { subject_issuer: IDP_ISSUER, max_ttl_seconds: 300, ...d })) as { id: string };
      return r.id;
    },
    async close() {
      for (const n of nodes) n.close();
      await server.destroy();
      await idp.close();
      dir.remove();
    },
  };
}

/** The person's token from the test IdP: valid for ten minutes, for Hallmark, with `claims` on top (undefined removes one). */
export function personToken(w: ExchangeWorld, claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return signedToken(w.idp.key, { iss: IDP_ISSUER, sub: PERSON, aud: HALLMARK_AUDIENCE, iat: now - 5, exp: now + 600, scope: "repo:read issues:write", jti: randomUUID(), ...claims }, header);
}

export const form = (fields: Record<string, string | string[] | undefined>): string => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) for (const one of [v ?? []].flat()) p.append(k, one);
  return p.toString();
};

/** A raw token request over mutual TLS as `as` (no client certificate when undefined). */
export function postToken(w: ExchangeWorld, as: Workload | undefined, fields: Record<string, string | string[] | undefined>, dpop?: string): Promise<HttpsResult> {
  return httpsRaw(w.tokenEndpoint, {
    method: "POST",
    body: form({ grant_type: TOKEN_EXCHANGE_GRANT, ...fields }),
    headers: { "content-type": "application/x-www-form-urlencoded", ...(dpop === undefined ? {} : { dpop }) },
    ca: w.bundlePem,
    ...(as ? { cert: as.certPem, key: as.keyPem } : {}),
  });
}

/** A DPoP proof made with jose (for the malformed ones oauth4webapi would never make). */
export async function dpopProof(key: { privateKey: CryptoKey; publicKey: CryptoKey }, claims: { htu: string; htm?: string; jti?: string; iat?: number; nonce?: string; ath?: string }): Promise<string> {
  const jwk = await exportJWK(key.publicKey);
  return new SignJWT({ htm: "POST", jti: randomUUID(), iat: Math.floor(Date.now() / 1000), ...claims })
    .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk })
    .sign(key.privateKey);
}

/** Every audit record so far, read from the database beside the running server. */
export async function auditRecords(w: ExchangeWorld): Promise<AuditRecord[]> {
  const store = await openSqliteStore(databasePath(w.server.config), { readonly: true });
  try {
    return await store.audit.list(0, 1_000_000);
  } finally {
    await store.close();
  }
}
