import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash, randomUUID } from "node:crypto";
import { join } from "node:path";
import { type CryptoKey, type JWK, SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair } from "jose";
import { DPOP_MAX_HEADER_BYTES, DpopVerifier, MemoryDpopReplayCache, RotatingDpopNonces, normalizeHtu, type DpopCheck } from "../../src/oauth/dpop.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { Store } from "../../src/store/types.js";
import { purgeExpired } from "../../src/service/purge.js";
import { tempDir } from "../helpers/tmp.js";
import { refusalCode } from "../helpers/refusal.js";

const now = new Date("2026-03-01T12:00:00Z");
const iat = Math.floor(now.getTime() / 1000);
const URL_ = "https://as.example.com/oauth2/token";
const b64 = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

let keys: { publicKey: CryptoKey; privateKey: CryptoKey };
let jwk: JWK;

beforeAll(async () => {
  keys = await generateKeyPair("ES256", { extractable: true });
  jwk = await exportJWK(keys.publicKey);
});

/** A proof signed by `keys` (or `o.key`), with the claims of a valid one unless overridden; `undefined` removes a claim. */
async function proof(o: { claims?: Record<string, unknown>; header?: Record<string, unknown>; key?: CryptoKey; alg?: string } = {}): Promise<string> {
  const claims: Record<string, unknown> = { jti: randomUUID(), htm: "POST", htu: URL_, iat, ...o.claims };
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k];
  return new SignJWT(claims).setProtectedHeader({ alg: o.alg ?? "ES256", typ: "dpop+jwt", jwk, ...o.header } as never).sign(o.key ?? keys.privateKey);
}

const fresh = () => new DpopVerifier({ replay: new MemoryDpopReplayCache(), iatWindowSeconds: 60 });
const check = (header: DpopCheck["header"], extra: Partial<DpopCheck> = {}): DpopCheck => ({ header, method: "POST", url: URL_, now, ...extra });

describe("DPoP proofs (RFC 9449 §4.3)", () => {
  it("accepts a valid proof and answers its key's RFC 7638 thumbprint, jti and iat", async () => {
    const p = await proof({ claims: { jti: "one" } });
    const v = await fresh().verify(check(p));
    expect(v.jkt).toBe(await calculateJwkThumbprint(jwk, "sha256"));
    expect(v.jti).toBe("one");
    expect(v.iat.getTime()).toBe(iat * 1000);
    expect(v.jwk).toEqual(jwk);
  });

  it("accepts Ed25519 (EdDSA) and RSA-PSS proofs", async () => {
    for (const alg of ["EdDSA", "PS256"]) {
      const k = await generateKeyPair(alg, { extractable: true });
      const kjwk = await exportJWK(k.publicKey);
      const p = await new SignJWT({ jti: randomUUID(), htm: "POST", htu: URL_, iat }).setProtectedHeader({ alg, typ: "dpop+jwt", jwk: kjwk }).sign(k.privateKey);
      expect((await fresh().verify(check(p))).jkt).toBe(await calculateJwkThumbprint(kjwk, "sha256"));
    }
  });

  it("refuses an absent header as dpop_required", async () => {
    expect(await refusalCode(fresh().verify(check(undefined)))).toBe("dpop_required");
  });

  it("refuses two DPoP headers, as an array or joined with a comma", async () => {
    const [a, b] = [await proof(), await proof()];
    expect(await refusalCode(fresh().verify(check([a, b])))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(`${a}, ${b}`)))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check([a])))).toBe("accepted");
  });

  it("refuses a header longer than 8 KiB before parsing it", async () => {
    const p = await proof({ claims: { pad: "x".repeat(DPOP_MAX_HEADER_BYTES) } });
    expect(p.length).toBeGreaterThan(DPOP_MAX_HEADER_BYTES);
    expect(await refusalCode(fresh().verify(check(p)))).toBe("dpop_proof_invalid");
  });

  it("refuses a wrong typ, and a proof that is not a compact JWS", async () => {
    expect(await refusalCode(fresh().verify(check(await proof({ header: { typ: "JWT" } }))))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check("not.a-jws")))).toBe("dpop_proof_invalid");
  });

  it("refuses alg none", async () => {
    const p = `${b64({ typ: "dpop+jwt", alg: "none", jwk })}.${b64({ jti: "n", htm: "POST", htu: URL_, iat })}.`;
    expect(await refusalCode(fresh().verify(check(p)))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(`${p}AA`)))).toBe("dpop_proof_invalid");
  });

  it("refuses HS256, even keyed with the public key's bytes", async () => {
    const secret = new TextEncoder().encode(JSON.stringify(jwk));
    const p = await new SignJWT({ jti: "h", htm: "POST", htu: URL_, iat }).setProtectedHeader({ alg: "HS256", typ: "dpop+jwt", jwk } as never).sign(secret);
    expect(await refusalCode(fresh().verify(check(p)))).toBe("dpop_proof_invalid");
  });

  it("refuses a jwk with private members, and a symmetric jwk", async () => {
    const priv = await exportJWK(keys.privateKey);
    expect(await refusalCode(fresh().verify(check(await proof({ header: { jwk: priv } }))))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(await proof({ header: { jwk: { kty: "oct", k: "AAAA" } } }))))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(await proof({ header: { jwk: undefined } }))))).toBe("dpop_proof_invalid");
  });

  it("refuses a signature with one bit flipped, and a proof signed by another key than its jwk", async () => {
    const p = await proof();
    const [h, c, s] = p.split(".") as [string, string, string];
    const sig = Buffer.from(s, "base64url");
    sig[5] = (sig[5] as number) ^ 0x01;
    expect(await refusalCode(fresh().verify(check(`${h}.${c}.${sig.toString("base64url")}`)))).toBe("dpop_proof_invalid");
    const other = await generateKeyPair("ES256");
    expect(await refusalCode(fresh().verify(check(await proof({ key: other.privateKey }))))).toBe("dpop_proof_invalid");
  });

  it("refuses a proof missing jti, htm, htu or iat", async () => {
    for (const claim of ["jti", "htm", "htu", "iat"]) {
      expect(await refusalCode(fresh().verify(check(await proof({ claims: { [claim]: undefined } })))), claim).toBe("dpop_proof_invalid");
    }
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { jti: "j".repeat(257) } }))))).toBe("dpop_proof_invalid");
  });

  it("refuses a proof for another method or another URL", async () => {
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { htm: "GET" } }))))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { htm: "post" } }))))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { htu: "https://as.example.com/oauth2/introspect" } }))))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { htu: "https://evil.example.com/oauth2/token" } }))))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { htu: "http://as.example.com/oauth2/token" } }))))).toBe("dpop_proof_invalid");
  });

  it("ignores query and fragment on both sides, and compares normalised scheme, host, port and path", async () => {
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { htu: `${URL_}?a=1#frag` } }), { url: `${URL_}?b=2` })))).toBe("accepted");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { htu: "HTTPS://AS.Example.COM:443/oauth2/token" } }))))).toBe("accepted");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { htu: "https://as.example.com/oauth2/%74oken" } }))))).toBe("accepted");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { htu: "https://as.example.com/x/../oauth2/token" } }))))).toBe("accepted");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { htu: "https://as.example.com:8443/oauth2/token" } }))))).toBe("dpop_proof_invalid");
    expect(normalizeHtu("http://h.example:80")).toBe("http://h.example/");
    expect(normalizeHtu("https://h.example/a%2fb")).toBe("https://h.example/a%2Fb");
    expect(normalizeHtu("https://user@h.example/")).toBeUndefined();
    expect(normalizeHtu("ftp://h.example/")).toBeUndefined();
  });

  it("refuses a proof created too long ago or too far in the future, and accepts one at the edge of the window", async () => {
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { iat: iat - 61 } }))))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { iat: iat + 61 } }))))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { iat: iat - 60 } }))))).toBe("accepted");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { iat: iat + 60 } }))))).toBe("accepted");
  });

  it("checks ath against the access token it accompanies", async () => {
    const token = "eyJ.access.token";
    const ath = createHash("sha256").update(token).digest("base64url");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { ath } }), { accessToken: token })))).toBe("accepted");
    expect(await refusalCode(fresh().verify(check(await proof({ claims: { ath } }), { accessToken: `${token}x` })))).toBe("dpop_proof_invalid");
    expect(await refusalCode(fresh().verify(check(await proof(), { accessToken: token })))).toBe("dpop_proof_invalid");
  });

  it("checks the key's thumbprint against the jkt the token is bound to", async () => {
    const jkt = await calculateJwkThumbprint(jwk, "sha256");
    expect(await refusalCode(fresh().verify(check(await proof(), { expectedJkt: jkt })))).toBe("accepted");
    const other = await exportJWK((await generateKeyPair("ES256")).publicKey);
    expect(await refusalCode(fresh().verify(check(await proof(), { expectedJkt: await calculateJwkThumbprint(other, "sha256") })))).toBe("dpop_proof_invalid");
  });

  it("refuses a replayed proof with the in-memory cache, and accepts the same jti again once the window has passed", async () => {
    const v = fresh();
    const p = await proof({ claims: { jti: "replay-me" } });
    expect(await refusalCode(v.verify(check(p)))).toBe("accepted");
    expect(await refusalCode(v.verify(check(p)))).toBe("dpop_proof_replayed");
    // Same jti from another key is another proof.
    const k2 = await generateKeyPair("ES256", { extractable: true });
    const p2 = await proof({ key: k2.privateKey, header: { jwk: await exportJWK(k2.publicKey) }, claims: { jti: "replay-me" } });
    expect(await refusalCode(v.verify(check(p2)))).toBe("accepted");
    // The original, much later with a fresh iat, passes: its record expired with its window.
    const later = new Date(now.getTime() + 10 * 60_000);
    const p3 = await proof({ claims: { jti: "replay-me", iat: iat + 600 } });
    expect(await refusalCode(v.verify(check(p3, { now: later })))).toBe("accepted");
  });

  it("fails closed when the in-memory cache is full of live proofs, and frees expired ones", async () => {
    const cache = new MemoryDpopReplayCache(2);
    const until = new Date(now.getTime() + 60_000);
    expect(await cache.remember("a", until, now)).toBe(true);
    expect(await cache.remember("b", until, now)).toBe(true);
    expect(await refusalCode(cache.remember("c", until, now))).toBe("unavailable");
    expect(await cache.remember("c", new Date(until.getTime() + 60_000), until)).toBe(true);
    expect(cache.size).toBe(1);
  });

  it("asks for the server's nonce when it is missing or stale, and accepts the current and the previous one", async () => {
    const nonces = new RotatingDpopNonces({ periodSeconds: 30 });
    const v = new DpopVerifier({ replay: new MemoryDpopReplayCache(), iatWindowSeconds: 60, nonces });
    expect(await refusalCode(v.verify(check(await proof())))).toBe("dpop_nonce_required");
    const current = nonces.current(now);
    expect(await refusalCode(v.verify(check(await proof({ claims: { nonce: current } }))))).toBe("accepted");
    const next = new Date(now.getTime() + 30_000);
    expect(nonces.current(next)).not.toBe(current);
    expect(await refusalCode(v.verify(check(await proof({ claims: { nonce: current, iat: iat + 30 } }), { now: next })))).toBe("accepted");
    const twoLater = new Date(now.getTime() + 60_000);
    expect(await refusalCode(v.verify(check(await proof({ claims: { nonce: current, iat: iat + 60 } }), { now: twoLater })))).toBe("dpop_nonce_required");
    expect(await refusalCode(v.verify(check(await proof({ claims: { nonce: "made-up" } }))))).toBe("dpop_nonce_required");
    // A nonce from another server (another secret) is stale here.
    const elsewhere = new RotatingDpopNonces({ periodSeconds: 30 }).current(now);
    expect(await refusalCode(v.verify(check(await proof({ claims: { nonce: elsewhere } }))))).toBe("dpop_nonce_required");
  });

  it("refuses to be configured with alg none or an HMAC algorithm", () => {
    expect(() => new DpopVerifier({ replay: new MemoryDpopReplayCache(), iatWindowSeconds: 60, algorithms: ["ES256", "HS256"] })).toThrow(/HS256/);
    expect(() => new DpopVerifier({ replay: new MemoryDpopReplayCache(), iatWindowSeconds: 60, algorithms: ["none"] })).toThrow(/none/);
  });
});

describe("DPoP replay cache in the datastore (shared by replicas)", () => {
  const dir = tempDir("dpop");
  let store: Store;
  let other: Store;
  beforeAll(async () => {
    store = await openSqliteStore(join(dir.path, "hallmark.db"));
    // A second connection to the same file: what a second replica sees.
    other = await openSqliteStore(join(dir.path, "hallmark.db"));
  });
  afterAll(async () => {
    await other.close();
    await store.close();
    dir.remove();
  });

  it("refuses a proof replayed to another replica", async () => {
    const replicaA = new DpopVerifier({ replay: store.dpopProofs, iatWindowSeconds: 60 });
    const replicaB = new DpopVerifier({ replay: other.dpopProofs, iatWindowSeconds: 60 });
    const p = await proof();
    expect(await refusalCode(replicaA.verify(check(p)))).toBe("accepted");
    expect(await refusalCode(replicaA.verify(check(p)))).toBe("dpop_proof_replayed");
    expect(await refusalCode(replicaB.verify(check(p)))).toBe("dpop_proof_replayed");
  });

  it("takes over an expired record, keeps a live one, and purges expired ones with the periodic purge", async () => {
    const until = new Date(now.getTime() + 61_000);
    expect(await store.dpopProofs.remember("k1", until, now)).toBe(true);
    expect(await other.dpopProofs.remember("k1", until, now)).toBe(false);
    expect(await store.dpopProofs.remember("k1", new Date(until.getTime() + 61_000), until)).toBe(true);
    expect(await store.dpopProofs.remember("k2", until, now)).toBe(true);
    const purged = await purgeExpired(store, new Date(until.getTime() + 1), 86400);
    // k2 and the record of the proof above expired; k1 was taken over and lives on.
    expect(purged.dpopProofs).toBe(2);
    expect(await store.dpopProofs.remember("k1", until, new Date(until.getTime() + 1))).toBe(false);
  });
});
