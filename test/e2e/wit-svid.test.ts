import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import { decodeProtectedHeader, exportJWK, generateKeyPair, importJWK, type JWK, jwtVerify, type JWTHeaderParameters } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import type { SvidFiles } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { AuditRecord } from "../../src/store/types.js";
import { runCli } from "../helpers/cli.js";
import { httpsRaw, postJson } from "../helpers/https.js";
import { admitJoinTokenNode } from "../helpers/nodes.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/**
 * WIT-SVIDs through the real API, as an attested node over mutual TLS: jose verifies each one
 * with the WIT keys of the SPIFFE bundle the server publishes (selected by `use` wit-svid, as
 * WIT-SVID §6.2 says, and used as published); the header and claims follow the standard; keys
 * that are not public, not well formed or not allowed are refused with stable codes; a node asks
 * only for entries it is entitled to; every issuance and refusal is audited.
 */
const NODE_ID = "spiffe://example.org/node/wit";
const WORKLOAD_ID = "spiffe://example.org/workload/wit";
const OTHER_ID = "spiffe://example.org/workload/not-mine";
let server: TestServer;
let node: SvidFiles;

beforeAll(async () => {
  server = await startTestServer();
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  node = await admitJoinTokenNode(server, NODE_ID);
  await admin("POST", "/admin/entries", { spiffe_id: WORKLOAD_ID, parent_id: NODE_ID, selectors: ["unix:uid:1000"] });
  await admin("POST", "/admin/entries", { spiffe_id: OTHER_ID, parent_id: "spiffe://example.org/node/someone-else", selectors: ["unix:uid:1000"] });
}, 60_000);

afterAll(async () => {
  await server?.destroy();
});

const fetchWit = (body: unknown) => postJson(`${server.url}/v1/svids/wit`, body, { cert: node.certChainPem, key: node.privateKeyPem! });

async function witAudit(): Promise<AuditRecord[]> {
  const store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
  try {
    return (await store.audit.list(0, 100_000)).filter((r) => r.event === "issue_wit");
  } finally {
    await store.close();
  }
}

async function spiffeBundleKeys(): Promise<JWK[]> {
  const r = await httpsRaw(`${server.url}/.well-known/spiffe-bundle`);
  expect(r.status).toBe(200);
  return (r.body as { keys: JWK[] }).keys;
}

/** WIT-SVID §6.2: the WIT keys are the bundle elements whose `use` is wit-svid; the header's kid picks one. */
async function verifyWit(token: string) {
  const witKeys = (await spiffeBundleKeys()).filter((k) => k.use === "wit-svid");
  return jwtVerify(
    token,
    async (header: JWTHeaderParameters) => {
      const key = witKeys.find((k) => k.kid === header.kid);
      if (!key) throw new Error(`no wit-svid key with kid ${header.kid}`);
      return importJWK(key, header.alg);
    },
    { typ: "wit+jwt", algorithms: ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] },
  );
}

async function publicJwk(alg: "ES256" | "ES384" | "PS256" | "RS256"): Promise<JWK> {
  const { publicKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(publicKey)), alg };
}

describe("POST /v1/svids/wit", () => {
  it.each(["ES256", "ES384", "PS256"] as const)("issues a WIT-SVID binding a %s key; jose verifies it with the bundle's wit-svid key", async (alg) => {
    const jwk = await publicJwk(alg);
    const r = await fetchWit({ public_key_jwk: jwk });
    expect(r.status, r.text).toBe(200);
    const body = r.body as { spiffe_id: string; token: string; expires_at: string; bundle_pem: string };
    expect(body.spiffe_id).toBe(WORKLOAD_ID);
    expect(body.bundle_pem).toContain("BEGIN CERTIFICATE");

    const { payload, protectedHeader } = await verifyWit(body.token);
    const witKids = (await spiffeBundleKeys()).filter((k) => k.use === "wit-svid").map((k) => k.kid);
    expect(Object.keys(protectedHeader).sort()).toEqual(["alg", "kid", "typ"]); // §2.4: nothing else
    expect(protectedHeader.typ).toBe("wit+jwt");
    expect(witKids).toContain(protectedHeader.kid);
    expect(payload.sub).toBe(WORKLOAD_ID);
    expect(payload.cnf).toEqual({ jwk });
    expect(payload).not.toHaveProperty("aud"); // §3.8 forbids it
    expect(payload).not.toHaveProperty("iss");
    expect(payload.exp! - payload.iat!).toBe(server.config.svid.witTtl);
    expect(new Date(payload.exp! * 1000).toISOString()).toBe(body.expires_at);
    // A UUIDv7 (time-ordered: it keys the SVID's record; src/time-ordered-id.ts), distinct per token.
    expect(z.uuidv7().safeParse(payload.jti).success, String(payload.jti)).toBe(true);

    // It was audited, under the token's jti.
    expect((await witAudit()).filter((a) => a.outcome === "success" && a.serial === payload.jti && a.spiffeId === WORKLOAD_ID && a.actor === NODE_ID)).toHaveLength(1);
  });

  it("the bundle's WIT keys have kids of their own: none is also a JWT-SVID key (WIT-SVID §6.1)", async () => {
    const keys = await spiffeBundleKeys();
    const wit = keys.filter((k) => k.use === "wit-svid");
    const jwt = keys.filter((k) => k.use === "jwt-svid");
    expect(wit.length).toBeGreaterThan(0);
    expect(jwt.length).toBeGreaterThan(0);
    const kids = keys.filter((k) => k.kid !== undefined).map((k) => k.kid);
    expect(new Set(kids).size).toBe(kids.length);
    for (const k of wit) expect(k).not.toHaveProperty("d");
  });

  it("hallmark bundle show --format spiffe lists the WIT keys with use wit-svid, the same as the bundle endpoint", async () => {
    const r = await runCli(["bundle", "show", "--format", "spiffe", "--data-dir", server.dataDir]);
    expect(r.code, r.stderr).toBe(0);
    const shown = (JSON.parse(r.stdout) as { keys: JWK[] }).keys.filter((k) => k.use === "wit-svid");
    expect(shown).toEqual((await spiffeBundleKeys()).filter((k) => k.use === "wit-svid"));
  });

  it("a bit flipped in the signature, or the payload, fails verification", async () => {
    const r = await fetchWit({ public_key_jwk: await publicJwk("ES256") });
    const token = (r.body as { token: string }).token;
    const sig = token.lastIndexOf(".") + 5;
    const flippedSig = token.slice(0, sig) + (token[sig] === "A" ? "B" : "A") + token.slice(sig + 1);
    await expect(verifyWit(flippedSig)).rejects.toMatchObject({ code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
    const [h, p, s] = token.split(".");
    const claims = JSON.parse(Buffer.from(p!, "base64url").toString()) as { sub: string };
    claims.sub = OTHER_ID;
    const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s}`;
    await expect(verifyWit(forged)).rejects.toMatchObject({ code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
    expect(decodeProtectedHeader(forged).typ).toBe("wit+jwt");
  });

  it("a node asking for an entry it is not entitled to: 403 not_entitled, audited", async () => {
    const before = (await witAudit()).filter((a) => a.code === "not_entitled").length;
    const r = await fetchWit({ public_key_jwk: await publicJwk("ES256"), spiffe_id: OTHER_ID });
    expect(r.status).toBe(403);
    expect(r.contentType).toContain("application/problem+json");
    expect(r.body).toMatchObject({ code: "not_entitled" });
    const after = (await witAudit()).filter((a) => a.code === "not_entitled" && a.outcome === "refused" && a.spiffeId === OTHER_ID);
    expect(after.length).toBe(before + 1);
  });

  it("without a client certificate: 401 client_cert_required", async () => {
    const r = await postJson(`${server.url}/v1/svids/wit`, { public_key_jwk: await publicJwk("ES256") });
    expect(r.status).toBe(401);
    expect(r.body).toMatchObject({ code: "client_cert_required" });
  });

  describe("refuses keys that are not public, not well formed or not allowed, with a stable code, and audits each", () => {
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const ecPublic = { ...(ec.publicKey.export({ format: "jwk" }) as JWK), alg: "ES256" };
    const ecPrivate = { ...(ec.privateKey.export({ format: "jwk" }) as JWK), alg: "ES256" };
    const ed = { ...(generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }) as JWK), alg: "EdDSA" };
    const weakRsa = { ...(generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ format: "jwk" }) as JWK), alg: "RS256" };
    const p521 = { ...(generateKeyPairSync("ec", { namedCurve: "P-521" }).publicKey.export({ format: "jwk" }) as JWK), alg: "ES256" };
    const offCurve = { ...ecPublic, y: Buffer.alloc(32, 7).toString("base64url") };
    const padded = { ...ecPublic, x: Buffer.concat([Buffer.alloc(1), Buffer.from(ecPublic.x!, "base64url")]).toString("base64url") };
    const { alg: _alg, ...noAlg } = ecPublic;
    const cases: Array<[string, unknown, string]> = [
      ["the private key itself (d)", ecPrivate, "wit_key_private"],
      ["a symmetric key (k)", { kty: "oct", k: "c2VjcmV0", alg: "HS256" }, "wit_key_private"],
      ["no alg", noAlg, "wit_key_malformed"],
      ["alg none", { ...ecPublic, alg: "none" }, "wit_key_unsupported"],
      ["ES384 on a P-256 key", { ...ecPublic, alg: "ES384" }, "wit_key_unsupported"],
      ["ES256 on a P-521 key", p521, "wit_key_unsupported"],
      ["Ed25519 (EdDSA is not a WIT-SVID algorithm)", ed, "wit_key_unsupported"],
      ["RSA of 1024 bits", weakRsa, "wit_key_unsupported"],
      ["a point off the curve", offCurve, "wit_key_malformed"],
      ["a coordinate with a leading zero byte", padded, "wit_key_malformed"],
      ["an unknown member (x5c)", { ...ecPublic, x5c: ["AAAA"] }, "wit_key_malformed"],
      ["a member that is not a string", { ...ecPublic, x: 5 }, "wit_key_malformed"],
      ["use enc", { ...ecPublic, use: "enc" }, "wit_key_malformed"],
    ];
    it.each(cases)("%s: %s", async (_name, jwk, code) => {
      const before = (await witAudit()).filter((a) => a.outcome === "refused" && a.code === code).length;
      const r = await fetchWit({ public_key_jwk: jwk });
      expect(r.status, r.text).toBe(400);
      expect(r.contentType).toContain("application/problem+json");
      expect(r.body).toMatchObject({ code, type: `urn:hallmark:error:${code}` });
      expect(r.text).not.toContain(ecPrivate.d); // the private member is never echoed
      expect((await witAudit()).filter((a) => a.outcome === "refused" && a.code === code).length).toBe(before + 1);
    });

    it("a key that is not a JSON object: 400 invalid_request", async () => {
      const r = await fetchWit({ public_key_jwk: "not a jwk" });
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ code: "invalid_request" });
    });
  });
});
