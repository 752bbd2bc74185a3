import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { openPkcs11KeyStore, type Pkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import { ensureSoftHsmToken } from "../../src/hsm/softhsm.js";
import { CertificateAuthority, type AuthorityOptions } from "../../src/issuer/authority.js";
import { createLogger } from "../../src/log.js";
import { ATTESTATION_CLAIM, mintAccessToken } from "../../src/oauth/access-token.js";
import { TrustDomain } from "../../src/spiffe/id.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { Store } from "../../src/store/types.js";
import { tempDir } from "../helpers/tmp.js";

// The access-token key beside the CA's other keys, on a real SoftHSM2 token.
const dir = tempDir("token-key");
const td = TrustDomain.parse("example.org");
let keyStore: Pkcs11KeyStore;
let store: Store;
let now = new Date("2030-01-01T00:00:00Z");
const log = createLogger("silent");

function options(over: Partial<AuthorityOptions> = {}): AuthorityOptions {
  return {
    trustDomain: td,
    keyStore,
    caKeys: store.caKeys,
    svids: store.svids,
    clock: () => now,
    log,
    x509: { keyType: "ec-p256", ttlSeconds: 30 * 86400 },
    jwt: { keyType: "ec-p256" },
    token: { keyType: "ec-p384", latestExpiry: (keyId) => store.accessTokens.latestExpiry(keyId) },
    refreshHintSeconds: 300,
    ...over,
  };
}

beforeAll(async () => {
  const { modulePath } = await ensureSoftHsmToken({ dir: dir.path, label: "tokenkey", pin: "1111", soPin: "2222" });
  keyStore = await openPkcs11KeyStore({ modulePath, tokenLabel: "tokenkey", pin: "1111" });
  store = await openSqliteStore(join(dir.path, "db.sqlite"));
});
afterAll(async () => {
  await store?.close();
  await keyStore?.close();
  dir.remove();
});

const content = (over: Partial<Parameters<typeof mintAccessToken>[1]> = {}) => ({
  issuer: "https://as.example",
  subject: "alice",
  audience: ["https://api.example"],
  clientId: "spiffe://example.org/agent/reviewer",
  actorIssuer: "spiffe://example.org",
  scope: ["repo:read", "issues:write"],
  attestation: { attestor: "tpm", node: "spiffe://example.org/node/n1", keyResident: true },
  issuedAt: now,
  expiresAt: new Date(now.getTime() + 300_000),
  ...over,
});

describe("the access-token key (kind token)", () => {
  let ca: CertificateAuthority;

  it("is generated in the HSM at first start, sensitive and not extractable, of delegation.keyType", async () => {
    ca = await CertificateAuthority.open(options());
    const tokenKeys = await store.caKeys.list("token");
    expect(tokenKeys).toHaveLength(1);
    expect(tokenKeys[0]).toMatchObject({ kind: "token", status: "active", keyType: "ec-p384" });
    expect(await keyStore.describeKey(tokenKeys[0]!.label)).toMatchObject({ sensitive: true, extractable: false, valueReadable: false });
  });

  it("is published in the access-token JWKS (kid, alg, use sig) and never in the SPIFFE bundle or the JWT-SVID JWKS", async () => {
    const jwks = (await ca.accessTokenJwks()) as { keys: Array<Record<string, unknown>> };
    const kid = (await store.caKeys.list("token"))[0]!.kid;
    expect(jwks.keys).toEqual([expect.objectContaining({ kid, alg: "ES384", use: "sig", kty: "EC", crv: "P-384" })]);
    expect(jwks.keys[0]).not.toHaveProperty("d");
    const bundle = JSON.stringify(await ca.spiffeBundle());
    const jwt = JSON.stringify(await ca.jwtJwks());
    expect(bundle).not.toContain(kid!);
    expect(jwt).not.toContain(kid!);
  });

  it("mints RFC 9068 tokens (typ at+jwt, nested act, cnf, the attestation claim) that jose verifies with the JWKS", async () => {
    const minted = await mintAccessToken(ca, content({ jkt: "x".repeat(43), priorAct: { sub: "spiffe://example.org/agent/planner", iss: "spiffe://example.org" } }));
    const header = decodeProtectedHeader(minted.token);
    expect(header).toEqual({ typ: "at+jwt", alg: "ES384", kid: minted.kid });
    const { payload } = await jwtVerify(minted.token, createLocalJWKSet((await ca.accessTokenJwks()) as never), {
      typ: "at+jwt",
      issuer: "https://as.example",
      audience: "https://api.example",
      currentDate: now,
    });
    const iat = now.getTime() / 1000;
    expect(payload).toEqual({
      iss: "https://as.example",
      sub: "alice",
      aud: "https://api.example",
      iat,
      nbf: iat,
      exp: iat + 300,
      jti: minted.jti,
      client_id: "spiffe://example.org/agent/reviewer",
      scope: "repo:read issues:write",
      act: { sub: "spiffe://example.org/agent/reviewer", iss: "spiffe://example.org", act: { sub: "spiffe://example.org/agent/planner", iss: "spiffe://example.org" } },
      cnf: { jkt: "x".repeat(43) },
      [ATTESTATION_CLAIM]: { attestor: "tpm", node: "spiffe://example.org/node/n1", key_resident: true },
    });
  });

  it("rotates: prepare publishes a second key, activate signs with it, retire waits for the last token of the previous key", async () => {
    const first = (await store.caKeys.list("token"))[0]!;
    const old = await mintAccessToken(ca, content());
    await store.accessTokens.record({
      jti: old.jti, delegationId: "d", clientId: "c", actorNodeId: "n", subject: "alice", subjectIssuer: "i", scope: "", audience: ["a"],
      keyId: old.keyId, issuedAt: now, expiresAt: old.expiresAt,
    });
    expect(old.keyId).toBe(first.id);
    expect((await ca.rotate("token", "prepare")).changed[0]).toMatch(/^prepared token key /);
    expect(((await ca.accessTokenJwks()) as { keys: unknown[] }).keys).toHaveLength(2);
    await ca.rotate("token", "activate");
    const next = await mintAccessToken(ca, content());
    expect(next.keyId).not.toBe(first.id);
    // Both verify while the old key is "previous".
    for (const t of [old.token, next.token]) await jwtVerify(t, createLocalJWKSet((await ca.accessTokenJwks()) as never), { currentDate: now });
    const waiting = await ca.rotate("token", "retire");
    expect(waiting.changed).toEqual([]);
    expect(waiting.notes?.[0]).toContain(old.expiresAt.toISOString());
    now = new Date(old.expiresAt.getTime() + 1000);
    expect((await ca.rotate("token", "retire")).changed).toEqual([`retired token key ${first.id}`]);
    expect(await keyStore.find(first.label)).toBeUndefined();
    expect(((await ca.accessTokenJwks()) as { keys: unknown[] }).keys).toHaveLength(1);
  });

  it("is found again by label after a restart, and a CA without access tokens configured keeps no token key", async () => {
    const before = await ca.accessTokenJwks();
    const again = await CertificateAuthority.open(options());
    expect(await again.accessTokenJwks()).toEqual(before);
    await expect(again.rotate("wit", "prepare")).rejects.toThrow(/keeps no wit key/);
    const without = await CertificateAuthority.open(options({ token: undefined }));
    await expect(without.rotate("token", "prepare")).rejects.toThrow(/keeps no token key/);
  });
});
