import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { X509Certificate, generateKeyPairSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createLocalJWKSet, jwtVerify } from "jose";
import { pemChain } from "../../src/api/pem.js";
import { openPkcs11KeyStore, type Pkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import type { KeyType } from "../../src/hsm/signer.js";
import { ensureSoftHsmToken } from "../../src/hsm/softhsm.js";
import { CertificateAuthority, type AuthorityOptions } from "../../src/issuer/authority.js";
import { createRootCa } from "../../src/issuer/certificates.js";
import { checkSigningCertConformance, checkX509SvidConformance } from "../../src/issuer/conformance.js";
import { createSoftwareSigner } from "../../src/issuer/file-signer.js";
import { createLogger } from "../../src/log.js";
import { TrustDomain } from "../../src/spiffe/id.js";
import { openSqliteStore } from "../../src/store/sqlite.js";
import type { Store } from "../../src/store/types.js";
import { run } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("issuer");
const td = TrustDomain.parse("example.org");
let keyStore: Pkcs11KeyStore;
let now = new Date("2030-01-01T00:00:00Z");
const clock = () => now;
const log = createLogger("silent");
const stores: Store[] = [];

async function newStore(name: string): Promise<Store> {
  const s = await openSqliteStore(join(dir.path, `${name}.db`));
  stores.push(s);
  return s;
}

function options(store: Store, over: Partial<AuthorityOptions> = {}): AuthorityOptions {
  return {
    trustDomain: td,
    keyStore,
    caKeys: store.caKeys,
    svids: store.svids,
    clock,
    log,
    x509: { keyType: "ec-p256", ttlSeconds: 30 * 86400 },
    jwt: { keyType: "ec-p256" },
    refreshHintSeconds: 300,
    ...over,
  };
}

const leafKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });

/** openssl, an independent implementation, checks the chain at the CA's own clock. */
async function opensslVerify(bundle: Buffer[], chain: Buffer[]): Promise<string> {
  const b = join(dir.path, `bundle-${Math.random()}.pem`);
  const c = join(dir.path, `chain-${Math.random()}.pem`);
  writeFileSync(b, pemChain(bundle));
  writeFileSync(c, pemChain(chain));
  const r = await run("openssl", ["verify", "-attime", String(Math.floor(now.getTime() / 1000) + 60), "-CAfile", b, "-untrusted", c, c]);
  return r.stdout + r.stderr;
}

beforeAll(async () => {
  const { modulePath } = await ensureSoftHsmToken({ dir: dir.path, label: "issuer", pin: "1111", soPin: "2222" });
  keyStore = await openPkcs11KeyStore({ modulePath, tokenLabel: "issuer", pin: "1111" });
});
afterAll(async () => {
  for (const s of stores) await s.close();
  await keyStore?.close();
  dir.remove();
});

describe("certificate authority on SoftHSM2", () => {
  it.each<[KeyType, KeyType, "pkcs1" | "pss", string]>([
    ["ec-p256", "ec-p256", "pkcs1", "ES256"],
    ["ec-p384", "ec-p384", "pkcs1", "ES384"],
    ["rsa-2048", "rsa-2048", "pkcs1", "RS256"],
    ["rsa-3072", "rsa-2048", "pss", "PS256"],
  ])("issues X.509-SVIDs with a %s CA that openssl accepts, and JWT-SVIDs (%s, %s) that jose accepts as %s", async (caType, jwtType, rsaPadding, alg) => {
    const store = await newStore(`kt-${caType}`);
    const ca = await CertificateAuthority.open(options(store, { x509: { keyType: caType, ttlSeconds: 86400 }, jwt: { keyType: jwtType, rsaPadding } }));
    const id = td.id("/workload/a");
    const svid = await ca.issueX509({ spki: leafKey(), spiffeId: id, ttlSeconds: 3600, now });
    expect(await opensslVerify(await ca.x509Authorities(), svid.chain)).toContain(": OK");
    checkX509SvidConformance(svid.chain[0]!, { trustDomain: td, caCertificate: (await ca.x509Authorities())[0] });
    const jwt = await ca.issueJwt({ spiffeId: id, audience: ["aud-1", "aud-2"], ttlSeconds: 300, now });
    const { payload, protectedHeader } = await jwtVerify(jwt.token, createLocalJWKSet((await ca.jwtJwks()) as never), {
      audience: "aud-2",
      currentDate: now,
    });
    expect(payload).toMatchObject({ sub: id.toString(), aud: ["aud-1", "aud-2"] });
    expect(payload.exp! - payload.iat!).toBe(300);
    expect(protectedHeader.kid).toBeTruthy();
    expect(protectedHeader.alg).toBe(alg);
  });

  it("keeps the CA and JWT keys in the HSM as sensitive, non-extractable keys, and finds them after a restart", async () => {
    const store = await newStore("restart");
    const first = await CertificateAuthority.open(options(store));
    const before = await first.bundlePem();
    const labels = (await store.caKeys.list()).map((k) => k.label);
    expect(labels).toHaveLength(2);
    for (const label of labels) {
      expect(await keyStore.describeKey(label)).toMatchObject({ sensitive: true, extractable: false, valueReadable: false });
    }
    const second = await CertificateAuthority.open(options(store));
    expect(await second.bundlePem()).toBe(before);
    expect((await store.caKeys.list()).map((k) => k.label)).toEqual(labels);
  });

  it("caps an SVID's notAfter at the CA's own", async () => {
    const store = await newStore("cap");
    const ca = await CertificateAuthority.open(options(store, { x509: { keyType: "ec-p256", ttlSeconds: 3600 } }));
    const svid = await ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 7 * 86400, now });
    const caCert = new X509Certificate((await ca.x509Authorities())[0]!);
    expect(new Date(new X509Certificate(svid.chain[0]!).validTo).getTime()).toBeLessThanOrEqual(new Date(caCert.validTo).getTime());
  });

  it("rotates: prepare publishes, activate switches signing, retire waits for the last SVID to expire", async () => {
    const store = await newStore("rotate");
    const ca = await CertificateAuthority.open(options(store));
    const seq0 = (await ca.spiffeBundle()).spiffe_sequence as number;
    const oldSvid = await ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 3600, now });
    await ca.rotate("x509", "prepare");
    await expect(ca.rotate("x509", "prepare")).rejects.toMatchObject({ code: "ca_rotation_in_progress" });
    expect(await ca.x509Authorities()).toHaveLength(2);
    expect((await ca.spiffeBundle()).spiffe_sequence).toBeGreaterThan(seq0);
    await ca.rotate("x509", "activate");
    await expect(ca.rotate("x509", "activate")).rejects.toMatchObject({ code: "ca_rotation_nothing_prepared" });
    const newSvid = await ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 3600, now });
    const [a, b] = await ca.x509Authorities();
    expect(new X509Certificate(newSvid.chain[0]!).checkIssued(new X509Certificate(b!))).toBe(true);
    expect(new X509Certificate(oldSvid.chain[0]!).checkIssued(new X509Certificate(a!))).toBe(true);
    expect(await opensslVerify([a!, b!], oldSvid.chain)).toContain(": OK");
    expect(await opensslVerify([a!, b!], newSvid.chain)).toContain(": OK");

    expect((await ca.rotate("x509", "retire")).changed).toEqual([]); // the old SVID is still valid
    now = new Date(now.getTime() + 2 * 3600_000);
    const retired = await ca.rotate("x509", "retire");
    expect(retired.changed).toHaveLength(1);
    expect(await ca.x509Authorities()).toHaveLength(1);
    const oldLabel = (await store.caKeys.list("x509")).find((k) => k.status === "retired")!.label;
    expect(await keyStore.find(oldLabel)).toBeUndefined();
  });

  it("rotates on schedule: prepares past prepareAt, activates past activateAt", async () => {
    const store = await newStore("schedule");
    const ca = await CertificateAuthority.open(options(store, { x509: { keyType: "ec-p256", ttlSeconds: 1000 }, rotation: { prepareAt: 0.5, activateAt: 0.75, checkIntervalSeconds: 60 } }));
    expect(await ca.rotate("x509", "auto")).toEqual({ changed: [] });
    now = new Date(now.getTime() + 600_000);
    expect((await ca.rotate("x509", "auto")).changed[0]).toMatch(/^prepared x509/);
    now = new Date(now.getTime() + 200_000);
    expect((await ca.rotate("x509", "auto")).changed[0]).toMatch(/^activated x509/);
  });

  it("works as an intermediate under an upstream CA, with openssl verifying to the upstream root", async () => {
    const store = await newStore("intermediate");
    const upstreamKey = generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey;
    const upstreamSigner = createSoftwareSigner(upstreamKey, "upstream");
    const upstreamRoot = await createRootCa({ signer: upstreamSigner, trustDomain: TrustDomain.parse("upstream.example"), keyId: "root", ttlSeconds: 365 * 86400, now });
    const ca = await CertificateAuthority.open(options(store, { x509: { keyType: "ec-p256", ttlSeconds: 86400, upstream: { chain: [upstreamRoot], signer: upstreamSigner } } }));
    expect(await ca.x509Authorities()).toEqual([upstreamRoot]);
    const svid = await ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 3600, now });
    expect(svid.chain).toHaveLength(2);
    checkSigningCertConformance(svid.chain[1]!, { trustDomain: td });
    expect(await opensslVerify([upstreamRoot], svid.chain)).toContain(": OK");
  });
});
