import { createLocalJWKSet, createRemoteJWKSet, customFetch, decodeJwt, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { NodeClient } from "../../src/client/node.js";
import { fetchTrusting } from "../helpers/https.js";
import { type TestServer, startTestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * A JWT-SVID verified the way an OIDC federation relying party (AWS IAM, GCP workload identity,
 * Vault's JWT auth) verifies it: discovery document → its jwks_uri → the token's signature by a
 * key from there, with `iss` equal to the discovered issuer and `aud` its own. jose's
 * createRemoteJWKSet does the JWKS fetching and caching itself; its customFetch is given an HTTPS
 * client that trusts the server's bundle and checks the host name by default (no override), which
 * is what a relying party configured with the server's CA does.
 */
const data = tempDir("oidc");
let server: TestServer | undefined;
let bundle: string;
let node: NodeClient;
let nodeTls: { certPem: string; keyPem: string; trustBundlePem: string };

const AUDIENCE = "https://rp.example.org";
const WORKLOAD = "spiffe://example.org/web";

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server!.adminSocket, method, path, body));

async function workloadJwt(): Promise<string> {
  return (await node.fetchJwt([AUDIENCE], WORKLOAD)).token;
}

async function discover(fetch: ReturnType<typeof fetchTrusting>) {
  const r = await fetch(`${server!.url}/.well-known/openid-configuration`);
  expect(r.status).toBe(200);
  return (await r.json()) as { issuer: string; jwks_uri: string; id_token_signing_alg_values_supported: string[] };
}

beforeAll(async () => {
  server = await startTestServer({ dataDir: data.path });
  bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  const token = ((await admin("POST", "/admin/tokens", { spiffe_id: "spiffe://example.org/node/n1", ttl_seconds: 600 })) as { token: string }).token;
  const svid = await attest({ server: server.url, tls: { trustBundlePem: bundle }, producer: joinTokenProducer(token) });
  await admin("POST", "/admin/entries", { spiffe_id: WORKLOAD, parent_id: "spiffe://example.org/node/n1", selectors: [] });
  nodeTls = { certPem: svid.certChainPem, keyPem: svid.privateKeyPem!, trustBundlePem: bundle };
  node = new NodeClient(server.url, nodeTls);
}, 60_000);

afterAll(async () => {
  node?.close();
  await server?.close();
  data.remove();
});

describe("JWT-SVIDs for OIDC relying parties", () => {
  it("verifies through discovery and the remote JWKS, with iss equal to the discovered issuer", async () => {
    const fetch = fetchTrusting(bundle);
    const discovery = await discover(fetch);
    expect(discovery.issuer).toBe(server!.url);
    const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri), { [customFetch]: fetch });
    const token = await workloadJwt();
    const { payload, protectedHeader } = await jwtVerify(token, jwks, {
      issuer: discovery.issuer,
      audience: AUDIENCE,
      algorithms: discovery.id_token_signing_alg_values_supported,
    });
    expect(payload.iss).toBe(discovery.issuer);
    expect(payload.sub).toBe(WORKLOAD);
    expect(protectedHeader.kid).toBeTruthy();
    // A relying party federated with another issuer, or expecting another audience, refuses the token.
    await expect(jwtVerify(token, jwks, { issuer: "https://other.example.org", audience: AUDIENCE })).rejects.toMatchObject({ claim: "iss" });
    await expect(jwtVerify(token, jwks, { issuer: discovery.issuer, audience: "https://elsewhere.example.org" })).rejects.toMatchObject({ claim: "aud" });
  });

  it("carries the configured jwt.issuer as iss, the same string discovery serves", async () => {
    await server!.close();
    server = await startTestServer({
      dataDir: data.path,
      overrides: { jwt: { keyType: "ec-p256", rsaPadding: "pkcs1", issuer: "https://oidc.example.org" } },
    });
    // Same CA and database: the node's SVID still authenticates on the new listener.
    node.close();
    node = new NodeClient(server.url, nodeTls);
    const fetch = fetchTrusting(bundle);
    const discovery = await discover(fetch);
    expect(discovery.issuer).toBe("https://oidc.example.org");
    expect(discovery.jwks_uri).toBe("https://oidc.example.org/.well-known/jwks.json");
    const token = await workloadJwt();
    expect(decodeJwt(token).iss).toBe("https://oidc.example.org");
    // jwks_uri names the public host, not this test's listener: fetch the same document from the listener.
    const jwks = createLocalJWKSet((await (await fetch(`${server.url}/.well-known/jwks.json`)).json()) as Parameters<typeof createLocalJWKSet>[0]);
    const { payload } = await jwtVerify(token, jwks, { issuer: discovery.issuer, audience: AUDIENCE });
    expect(payload.sub).toBe(WORKLOAD);
  });
});
