import "reflect-metadata";
import { KeyObject, verify as nodeVerify, type webcrypto } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SignJWT, createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, type JSONWebKeySet } from "jose";
import { attest, joinTokenProducer } from "../src/client/attest.js";
import { DpopKey } from "../src/client/dpop-key.js";
import { ApiClient, adminRequest, expectOk } from "../src/client/http.js";
import { NodeClient } from "../src/client/node.js";
import { TokenExchangeClient } from "../src/client/token-exchange.js";
import { rawSignRate } from "./hsm-raw.js";
import { BENCH_NODE_ARGS, processCpuSeconds, startBenchServer } from "./server-process.js";
import { closedLoop, openLoop, serialLoop, summary } from "./stats.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const TD = "spiffe://example.org";
const AGENT = `${TD}/bench/agent`;
const NODE = `${TD}/bench/oauth-node`;
const IDP = "https://idp.bench.example";
const API = "https://api.bench.example";
const HALLMARK_AUD = "https://hallmark.bench.example";

/**
 * The token service (issue 11) against `hallmark server` in its own process: token exchanges with
 * DPoP from an agent authenticated by its X509-SVID over mutual TLS (kept-alive connections), the
 * server's CPU per exchange (what one server core sustains), p99 at half the peak, and
 * introspections; next to the raw HSM sign rate of the same token and the raw rate of one JWT
 * verification, both measured in the same run. An exchange costs at least one verification of the
 * person's token, one of the DPoP proof and one HSM signature.
 */
export async function run(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "hallmark-bench-oauth-"));
  // The person's identity provider: its key made here, its JWKS given to the server as a file.
  const idp = await generateKeyPair("ES256", { extractable: true });
  const jwks: JSONWebKeySet = { keys: [{ ...(await exportJWK(idp.publicKey)), kid: "idp-1", alg: "ES256", use: "sig" }] };
  writeFileSync(join(dataDir, "idp-jwks.json"), JSON.stringify(jwks));
  const config = { delegation: { subjectIssuers: [{ issuer: IDP, audiences: [HALLMARK_AUD], jwksFile: join(dataDir, "idp-jwks.json") }] } };
  const server = await startBenchServer(dataDir, BENCH_NODE_ARGS, { config });
  const closers: Array<() => void> = [];
  try {
    const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
    const raw = await rawSignRate({
      softhsmConf: join(dataDir, "softhsm", "softhsm2.conf"),
      tokenLabel: "hallmark",
      pin: readFileSync(join(dataDir, "softhsm", "user.pin"), "utf8").trim(),
      seconds: SECONDS,
    });

    const t = Math.floor(Date.now() / 1000);
    // One hour of life, so that a long run never sees it expire; no jti, so it may be exchanged again and again.
    const personToken = await new SignJWT({ iss: IDP, sub: "alice@example.com", aud: HALLMARK_AUD, iat: t, exp: t + 3600, scope: "repo:read issues:write" })
      .setProtectedHeader({ alg: "ES256", kid: "idp-1", typ: "JWT" })
      .sign(idp.privateKey);
    const idpKeys = createLocalJWKSet(jwks);
    const verify = await closedLoop(() => jwtVerify(personToken, idpKeys, { issuer: IDP, audience: HALLMARK_AUD }), 1, SECONDS);
    // The signature check alone, synchronous node:crypto: the floor under jose's (WebCrypto, async) verification.
    const [header, payload, signature] = personToken.split(".") as [string, string, string];
    const publicKey = KeyObject.from(idp.publicKey as unknown as webcrypto.CryptoKey);
    const signed = Buffer.from(`${header}.${payload}`);
    const sig = Buffer.from(signature, "base64url");
    const rawVerify = serialLoop(() => {
      if (!nodeVerify("sha256", signed, { key: publicKey, dsaEncoding: "ieee-p1363" }, sig)) throw new Error("the person's token does not verify");
    }, SECONDS);

    const { bundle_pem: bundlePem } = (await admin("GET", "/admin/bundle")) as { bundle_pem: string };
    const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
    const nodeSvid = await attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer: joinTokenProducer(token) });
    const node = new NodeClient(server.url, { certPem: nodeSvid.certChainPem, keyPem: nodeSvid.privateKeyPem!, trustBundlePem: bundlePem });
    closers.push(() => node.close());
    await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: AGENT, selectors: ["bench:agent"] });
    const agentSvid = await node.fetchX509(AGENT);
    await admin("POST", "/admin/delegations", { actor: AGENT, subject_issuer: IDP, scopes: ["repo:read", "issues:write"], audiences: [API], max_ttl_seconds: 600, require_dpop: true });

    const svid = { certPem: agentSvid.certChainPem, keyPem: agentSvid.privateKeyPem };
    // 16 connections, opened during warm-up: the measured phases never pay for a TLS handshake.
    const client = await TokenExchangeClient.discover({ server: server.url, trustBundlePem: bundlePem, svid, maxSockets: 16 });
    closers.push(() => client.close());
    const { key: dpopKey } = await DpopKey.generate();
    const issued: string[] = [];
    const exchange = async () => {
      const r = await client.exchange({ subjectToken: personToken, subjectTokenType: "jwt", scope: "repo:read", audience: [API], dpopKey });
      if (issued.length < 1024) issued.push(r.access_token);
    };
    await closedLoop(exchange, 16, 1); // warm-up: TLS sessions, JIT, the IdP's keys

    const cpu0 = processCpuSeconds(server.pid);
    const peak = await closedLoop(exchange, 16, SECONDS);
    const serverCpu = processCpuSeconds(server.pid) - cpu0;
    const half = peak.ops / peak.seconds / 2;
    const halfLoad = await openLoop(exchange, half, SECONDS);

    const introspector = new ApiClient(new URL(server.url), { trustBundlePem: bundlePem, ...svid, maxSockets: 16 });
    closers.push(() => introspector.close());
    const introspectionUrl = client.metadata.introspection_endpoint ?? `${server.url}/oauth2/introspect`;
    let n = 0;
    const introspect = async () => {
      const body = { bytes: Buffer.from(new URLSearchParams({ token: issued[n++ % issued.length]! }).toString()), contentType: "application/x-www-form-urlencoded" };
      const r = await introspector.send("POST", introspectionUrl, body);
      if (r.status !== 200 || (r.body as { active?: boolean }).active !== true) throw new Error(`introspection failed: ${r.status} ${JSON.stringify(r.body)}`);
    };
    await closedLoop(introspect, 16, 1);
    const cpu1 = processCpuSeconds(server.pid);
    const introspections = await closedLoop(introspect, 16, SECONDS);
    const introspectCpu = processCpuSeconds(server.pid) - cpu1;

    console.log("\n== Token exchange (RFC 8693) with DPoP over HTTPS (mTLS agent, keep-alive), one server process");
    console.log(summary("baseline: raw pkcs11js C_Sign ECDSA P-256 (same token)", raw.measured));
    console.log(summary("baseline: node:crypto ECDSA P-256 verify (its signature), sync", rawVerify));
    console.log(summary("baseline: jose jwtVerify ES256 (the person's token), 1 at a time", verify));
    console.log(summary("token exchange with DPoP, 16 in flight (peak)", peak));
    console.log(summary(`token exchange at ${half.toFixed(0)}/s offered (half of peak)`, halfLoad));
    console.log(summary("introspection (mTLS), 16 in flight (peak)", introspections));
    const perExchangeMs = (serverCpu / peak.ops) * 1000;
    console.log(
      `server CPU during the exchange peak: ${((serverCpu / peak.seconds) * 100).toFixed(0)}% of one core, ${perExchangeMs.toFixed(2)} ms per exchange ` +
        `(one server core: ${(peak.ops / serverCpu).toFixed(0)} exchanges/s); per introspection ${((introspectCpu / introspections.ops) * 1000).toFixed(2)} ms`,
    );
    console.log(
      `exchange peak / raw sign rate: ${((peak.ops / peak.seconds / raw.perSecond) * 100).toFixed(1)}%; ` +
        `one-core exchange capacity / raw JWT verify rate: ${((peak.ops / serverCpu / (verify.ops / verify.seconds)) * 100).toFixed(1)}%`,
    );
  } finally {
    for (const close of closers.reverse()) close();
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
