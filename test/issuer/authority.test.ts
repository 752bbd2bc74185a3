import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { X509Certificate, generateKeyPairSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify } from "jose";
import { pemBlocks, pemChain } from "../../src/pki/pem.js";
import { openPkcs11KeyStore, type Pkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import type { KeyType } from "../../src/hsm/signer.js";
import { ensureSoftHsmToken } from "../../src/hsm/softhsm.js";
import { CertificateAuthority, type AuthorityOptions } from "../../src/issuer/authority.js";
import { createRootCa } from "../../src/issuer/x509-ca.js";
import { checkSigningCertConformance, checkX509SvidConformance } from "../../src/issuer/conformance.js";
import { createSoftwareSigner } from "../../src/issuer/file-signer.js";
import { parseSpiffeBundle } from "../../src/issuer/bundle.js";
import { createLogger } from "../../src/log.js";
import { TrustDomain } from "../../src/spiffe/id.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { Store } from "../../src/store/types.js";
import { type Recordable, normalizeSerial } from "../../src/service/ports.js";
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

/** What the issuance services do with every SVID (they commit it with its audit record): rotation reads these records. */
async function recorded<T extends Recordable>(store: Store, issued: Promise<T>): Promise<T> {
  const svid = await issued;
  await store.svids.record(svid.svidRecord);
  return svid;
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
    const oldSvid = await recorded(store, ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 3600, now }));
    // The PEM bundle every node answer carries is encoded once per set of authorities: it must
    // follow each rotation step all the same.
    expect(await ca.bundlePem()).toBe(pemChain(await ca.x509Authorities()));
    await ca.rotate("x509", "prepare");
    await expect(ca.rotate("x509", "prepare")).rejects.toMatchObject({ code: "ca_rotation_in_progress" });
    expect(await ca.x509Authorities()).toHaveLength(2);
    expect(await ca.bundlePem()).toBe(pemChain(await ca.x509Authorities()));
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
    expect(await ca.bundlePem()).toBe(pemChain(await ca.x509Authorities()));
    expect(pemBlocks(await ca.bundlePem())).toEqual([b]);
    const oldLabel = (await store.caKeys.list("x509")).find((k) => k.status === "retired")!.label;
    expect(await keyStore.find(oldLabel)).toBeUndefined();
  });

  it("rotates on schedule: prepares past prepareAt, activates past activateAt", async () => {
    const store = await newStore("schedule");
    const ca = await CertificateAuthority.open(options(store, { x509: { keyType: "ec-p256", ttlSeconds: 1000 }, rotation: { prepareAt: 0.5, activateAt: 0.75, checkIntervalSeconds: 60 } }));
    const idle = await ca.rotate("x509", "auto");
    expect(idle.changed).toEqual([]);
    expect(idle.notes).toEqual([expect.stringMatching(/^nothing to retire: no previous x509 key \(the active one is [0-9a-f-]{36}\)$/)]);
    now = new Date(now.getTime() + 600_000);
    expect((await ca.rotate("x509", "auto")).changed[0]).toMatch(/^prepared x509/);
    const signedByOld = await recorded(store, ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 300, now }));
    now = new Date(now.getTime() + 200_000);
    expect((await ca.rotate("x509", "auto")).changed[0]).toMatch(/^activated x509/);
    // The old key now waits for its last SVID: retire says which key and until when.
    const waiting = await ca.rotate("x509", "retire");
    expect(waiting.changed).toEqual([]);
    expect(waiting.notes).toEqual([expect.stringMatching(/^previous x509 key [0-9a-f-]{36} stays published until its last SVID expires at /)]);
    expect(waiting.notes![0]).toContain(signedByOld.notAfter.toISOString());
  });

  it("cross-signs the active CA certificate with the previous key, so a pre-rotation root verifies the server's chain", async () => {
    const store = await newStore("cross");
    const ca = await CertificateAuthority.open(options(store, { x509: { keyType: "ec-p256", ttlSeconds: 86400 } }));
    expect(await ca.crossSignedCertificates()).toEqual([]);
    const [oldRoot] = await ca.x509Authorities();
    await ca.prepare("x509");
    await ca.activate("x509");
    const cross = await ca.crossSignedCertificates();
    expect(cross).toHaveLength(1);
    expect(await ca.crossSignedCertificates()).toEqual(cross);
    const leaf = await ca.issueX509({ spki: leafKey(), spiffeId: td.id("/hallmark/server"), ttlSeconds: 3600, now });
    const roots = await ca.x509Authorities();
    const newRoot = roots.find((r) => !r.equals(oldRoot!))!;
    // openssl, the independent witness: the old root alone verifies leaf + cross; the new root alone verifies too.
    expect(await opensslVerify([oldRoot!], [leaf.chain[0]!, cross[0]!])).toContain(": OK");
    expect(await opensslVerify([newRoot], [leaf.chain[0]!, cross[0]!])).toContain(": OK");
    expect(await opensslVerify([oldRoot!], [leaf.chain[0]!])).not.toContain(": OK");
  });

  it("works as an intermediate under an upstream CA, with openssl verifying to the upstream root", async () => {
    const store = await newStore("intermediate");
    const upstreamKey = generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey;
    const upstreamSigner = createSoftwareSigner(upstreamKey, "upstream");
    const upstreamRoot = await createRootCa({ signer: upstreamSigner, trustDomain: TrustDomain.parse("upstream.example"), ttlSeconds: 365 * 86400, now });
    const ca = await CertificateAuthority.open(options(store, { x509: { keyType: "ec-p256", ttlSeconds: 86400, upstream: { chain: [upstreamRoot], signer: upstreamSigner } } }));
    expect(await ca.x509Authorities()).toEqual([upstreamRoot]);
    const svid = await ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 3600, now });
    expect(svid.chain).toHaveLength(2);
    checkSigningCertConformance(svid.chain[1]!, { trustDomain: td });
    expect(await opensslVerify([upstreamRoot], svid.chain)).toContain(": OK");
  });
});

describe("certificate authority: bundle, rotation and restart in detail", () => {
  /** Each test its own clock, so the shared `now` of the tests above is left alone. */
  function localClock(start = "2032-01-01T00:00:00Z") {
    const c = { t: new Date(start) };
    return { c, clock: () => c.t };
  }

  it("returns every SVID's record against the signing key, and names keys hallmark-<kind>-<id>", async () => {
    const store = await newStore("records");
    const { c, clock: ck } = localClock();
    const ca = await CertificateAuthority.open(options(store, { clock: ck }));
    const svid = await recorded(store, ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 600, nodeId: "spiffe://example.org/node/1", now: c.t }));
    const active = ca.activeKey("x509");
    expect(await store.svids.get(normalizeSerial(svid.serial))).toMatchObject({ spiffeId: "spiffe://example.org/w", kind: "x509", caKeyId: active.record.id, notAfter: svid.notAfter });
    await recorded(store, ca.issueJwt({ spiffeId: td.id("/w"), audience: ["a"], ttlSeconds: 60, now: c.t }));
    expect(await store.svids.countByKind()).toEqual({ x509: 1, jwt: 1 });
    expect(await store.svids.latestExpiry(ca.activeKey("jwt").record.id)).toEqual(new Date(c.t.getTime() + 60_000));
    for (const k of await store.caKeys.list()) expect(k.label).toBe(`hallmark-${k.kind}-${k.id}`);
    await expect(ca.issueX509({ spki: leafKey(), spiffeId: TrustDomain.parse("other.org").id("/w"), ttlSeconds: 60, now: c.t })).rejects.toMatchObject({
      code: "spiffe_id_outside_trust_domain",
    });
  });

  it("publishes prepared, active and previous keys of both kinds, bumping the sequence on each change", async () => {
    const store = await newStore("bundle");
    const { c, clock: ck } = localClock();
    const ca = await CertificateAuthority.open(options(store, { clock: ck }));
    const seq = async () => (await ca.bundle()).sequence;
    const s0 = await seq();
    const oldJwt = await recorded(store, ca.issueJwt({ spiffeId: td.id("/w"), audience: ["a"], ttlSeconds: 300, now: c.t }));
    await ca.prepare("x509", c.t);
    await ca.prepare("jwt", c.t);
    expect(await seq()).toBe(s0 + 2);
    const parsed = parseSpiffeBundle(JSON.stringify(await ca.spiffeBundle()));
    expect(parsed.x509Authorities).toHaveLength(2);
    expect(parsed.jwtAuthorities).toHaveLength(2);
    expect(parsed.sequence).toBe(s0 + 2);
    expect(parsed.refreshHintSeconds).toBe(300);

    await ca.activate("jwt", c.t);
    expect(await seq()).toBe(s0 + 3);
    const newJwt = await recorded(store, ca.issueJwt({ spiffeId: td.id("/w"), audience: ["a"], ttlSeconds: 300, now: c.t }));
    const jwks = createLocalJWKSet((await ca.jwtJwks()) as never);
    const kidOf = async (t: string) => (await jwtVerify(t, jwks, { currentDate: c.t })).protectedHeader.kid;
    expect(await kidOf(oldJwt.token)).not.toBe(await kidOf(newJwt.token)); // both verify, under different keys

    // The old JWT key retires once its last token has expired, and its tokens stop verifying.
    expect(await ca.retireExpired(c.t, "jwt")).toEqual([]);
    c.t = new Date(c.t.getTime() + 301_000);
    expect(await ca.retireExpired(c.t, "jwt")).toHaveLength(1);
    expect(await seq()).toBe(s0 + 4);
    const after = createLocalJWKSet((await ca.jwtJwks()) as never);
    await expect(jwtVerify(oldJwt.token, after, { currentDate: new Date(c.t.getTime() - 10_000) })).rejects.toMatchObject({ code: "ERR_JWKS_NO_MATCHING_KEY" });
    expect((await ca.bundle()).jwtAuthorities).toHaveLength(1);
  });

  it("comes back after a restart mid-rotation with the same keys in the same states", async () => {
    const store = await newStore("restart-rotation");
    const { c, clock: ck } = localClock();
    const first = await CertificateAuthority.open(options(store, { clock: ck }));
    await first.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 600, now: c.t });
    await first.prepare("x509", c.t);
    await first.activate("x509", c.t);
    await first.prepare("x509", c.t);
    const keysBefore = await first.keys();
    const bundleBefore = await first.spiffeBundle();
    await first.close();

    const second = await CertificateAuthority.open(options(store, { clock: ck }));
    expect(new Set((await second.keys()).map((k) => `${k.id}:${k.status}`))).toEqual(new Set(keysBefore.map((k) => `${k.id}:${k.status}`)));
    expect(await second.spiffeBundle()).toEqual(bundleBefore);
    expect(second.activeKey("x509").record.certificate).toEqual(first.activeKey("x509").record.certificate);
    // The restarted CA signs with the very same HSM key.
    const svid = await second.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 600, now: c.t });
    expect(new X509Certificate(svid.chain[0]!).verify(new X509Certificate(first.activeKey("x509").record.certificate!).publicKey)).toBe(true);
  });

  it("refuses to start when a recorded key is missing from the HSM", async () => {
    const store = await newStore("missing");
    const { clock: ck } = localClock();
    const ca = await CertificateAuthority.open(options(store, { clock: ck }));
    await keyStore.destroy(ca.activeKey("x509").record.label);
    await expect(CertificateAuthority.open(options(store, { clock: ck }))).rejects.toMatchObject({ code: "hsm_key_not_found" });
  });

  it("runs rotation steps one at a time: of two concurrent prepares, one wins", async () => {
    const store = await newStore("concurrent");
    const { clock: ck } = localClock();
    const ca = await CertificateAuthority.open(options(store, { clock: ck }));
    const results = await Promise.allSettled([ca.prepare("x509"), ca.prepare("x509")]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(results.find((r) => r.status === "rejected")).toMatchObject({ reason: { code: "ca_rotation_in_progress" } });
    expect((await store.caKeys.list("x509")).filter((k) => k.status === "prepared")).toHaveLength(1);
  });

  it("rotates both kinds on schedule through rotateIfDue(now, schedule), then retires the old keys", async () => {
    const store = await newStore("schedule-both");
    const { c, clock: ck } = localClock();
    const ca = await CertificateAuthority.open(options(store, { clock: ck, x509: { keyType: "ec-p256", ttlSeconds: 1000 } }));
    const schedule = { prepareAt: 0.5, activateAt: 0.75, checkIntervalSeconds: 60 };
    const oldX509 = ca.activeKey("x509").record.id;
    const svid = await ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 100, now: c.t });
    c.t = new Date(c.t.getTime() + 800_000);
    const changed = await ca.rotateIfDue(c.t, schedule);
    expect(changed.filter((s) => s.startsWith("prepared"))).toHaveLength(2);
    expect(changed.filter((s) => s.startsWith("activated"))).toHaveLength(2);
    expect(ca.activeKey("x509").record.id).not.toBe(oldX509);
    // The old SVID (100 s) has long expired: the next check retires both previous keys.
    const next = await ca.rotateIfDue(c.t, schedule);
    expect(next.filter((s) => s.startsWith("retired"))).toHaveLength(2);
    expect(await ca.x509Authorities()).toHaveLength(1);
    expect(svid.chain).toHaveLength(1);
  });

  it("with WIT-SVIDs configured: a third key, sensitive in the HSM, with a kid of its own, published with use wit-svid, rotated and retired like the JWT key", async () => {
    const store = await newStore("wit");
    const { c, clock: ck } = localClock();
    const ca = await CertificateAuthority.open(options(store, { clock: ck, wit: {} }));
    const records = await store.caKeys.list();
    expect(records.map((k) => k.kind).sort()).toEqual(["jwt", "wit", "x509"]);
    for (const k of records) expect(await keyStore.describeKey(k.label)).toMatchObject({ sensitive: true, extractable: false, valueReadable: false });
    expect(ca.activeKey("wit").record.kid).not.toBe(ca.activeKey("jwt").record.kid);

    const { publicKey } = await generateKeyPair("ES256", { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), alg: "ES256" };
    const witKeys = async () => parseSpiffeBundle(JSON.stringify(await ca.spiffeBundle())).witAuthorities;
    const verify = async (token: string, at: Date) => {
      const keys = await witKeys();
      return jwtVerify(token, (h) => keys.find((k) => k.kid === h.kid)?.publicKey ?? Promise.reject(new Error(`no key ${h.kid}`)), { typ: "wit+jwt", currentDate: at });
    };
    const oldWit = await recorded(store, ca.issueWit({ spiffeId: td.id("/w"), publicKeyJwk: jwk, ttlSeconds: 300, now: c.t }));
    expect((await verify(oldWit.token, c.t)).payload).toMatchObject({ sub: "spiffe://example.org/w", cnf: { jwk } });
    expect(await store.svids.get(`wit-${oldWit.jti}`)).toMatchObject({ kind: "wit", caKeyId: ca.activeKey("wit").record.id });

    // prepare publishes a second WIT key; activate signs with it; the old key stays until its last WIT expires.
    const seq = (await ca.bundle()).sequence;
    await ca.rotate("wit", "prepare");
    expect(await witKeys()).toHaveLength(2);
    await ca.rotate("wit", "activate");
    expect((await ca.bundle()).sequence).toBe(seq + 2);
    const newWit = await recorded(store, ca.issueWit({ spiffeId: td.id("/w"), publicKeyJwk: jwk, ttlSeconds: 300, now: c.t }));
    const kidOf = async (t: string) => (await verify(t, c.t)).protectedHeader.kid;
    expect(await kidOf(oldWit.token)).not.toBe(await kidOf(newWit.token));
    expect((await ca.rotate("wit", "retire")).changed).toEqual([]);
    c.t = new Date(c.t.getTime() + 301_000);
    expect((await ca.rotate("wit", "retire")).changed).toHaveLength(1);
    expect(await witKeys()).toHaveLength(1);
    await expect(verify(oldWit.token, new Date(c.t.getTime() - 10_000))).rejects.toThrow(/no key/);
    // The JWT key was never touched by the WIT key's rotation.
    expect((await ca.bundle()).jwtAuthorities).toHaveLength(1);

    // The schedule rotates all three kinds.
    c.t = new Date(c.t.getTime() + 40 * 86400_000);
    const changed = await ca.rotateIfDue(c.t, { prepareAt: 0.5, activateAt: 0.75, checkIntervalSeconds: 60 });
    expect(changed.filter((s) => s.startsWith("activated")).map((s) => s.split(" ")[1]).sort()).toEqual(["jwt", "wit", "x509"]);
  });

  it("without WIT-SVIDs configured: no WIT key, no wit-svid keys in the bundle, and no WIT key to rotate", async () => {
    const store = await newStore("no-wit");
    const ca = await CertificateAuthority.open(options(store));
    expect((await store.caKeys.list()).map((k) => k.kind).sort()).toEqual(["jwt", "x509"]);
    expect(parseSpiffeBundle(JSON.stringify(await ca.spiffeBundle())).witAuthorities).toEqual([]);
    await expect(ca.rotate("wit", "prepare")).rejects.toMatchObject({ code: "invalid_request" });
    await expect(ca.issueWit({ spiffeId: td.id("/w"), publicKeyJwk: {}, ttlSeconds: 60, now })).rejects.toMatchObject({ code: "ca_not_ready" });
  });

  it("uses an upstream CA key held in the HSM under its label", async () => {
    const store = await newStore("hsm-upstream");
    const { c, clock: ck } = localClock();
    const upstreamSigner = await keyStore.generate("corp-root-ca", "ec-p384");
    const upstreamRoot = await createRootCa({ signer: upstreamSigner, trustDomain: TrustDomain.parse("corp.example"), ttlSeconds: 365 * 86400, now: c.t });
    const found = await keyStore.find("corp-root-ca");
    const ca = await CertificateAuthority.open(options(store, { clock: ck, x509: { keyType: "ec-p256", ttlSeconds: 86400, upstream: { chain: [upstreamRoot], signer: found! } } }));
    const svid = await ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 600, now: c.t });
    expect(svid.chain).toHaveLength(2);
    now = c.t; // opensslVerify checks at the shared clock
    expect(await opensslVerify([upstreamRoot], svid.chain)).toContain(": OK");
    expect(await ca.bundlePem()).toBe(pemChain([upstreamRoot]));
  });
});
  it("records every X.509-SVID under the serial spelling request-time lookups use, a leading zero nibble included", async () => {
    const store = await newStore("serial-spelling");
    const ca = await CertificateAuthority.open(options(store));
    // About one serial in eight starts with a zero nibble (first octet 0x01..0x0f): issue until one does.
    let svid = await recorded(store, ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 3600, now }));
    for (let i = 0; i < 200 && !svid.serial.startsWith("0"); i++) svid = await recorded(store, ca.issueX509({ spki: leafKey(), spiffeId: td.id("/w"), ttlSeconds: 3600, now }));
    expect(svid.serial).toMatch(/^0/);
    const presented = new X509Certificate(svid.chain[0]!).serialNumber;
    expect((await store.svids.get(normalizeSerial(presented)))?.spiffeId).toBe(td.id("/w").toString());
  });

