import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { type JWK, calculateJwkThumbprint, compactVerify, decodeProtectedHeader, importJWK } from "jose";
import { HallmarkError } from "../errors.js";
import { PRIVATE_JWK_MEMBERS } from "../issuer/wit-svid.js";
import { ASYMMETRIC_JWS_ALGORITHMS, asymmetricAlgorithms } from "./algorithms.js";
import { oauthError } from "./errors.js";

/**
 * DPoP proof verification (RFC 9449 §4.3), every check in the order the RFC lists them. The
 * replay cache and the nonce source are ports: a server shares both between replicas through its
 * datastore; a resource server outside Hallmark uses the in-memory ones below.
 */

/** A proof is a few hundred bytes (an RSA-4096 jwk makes it about 1.5 KiB): 8 KiB bounds the work of a hostile one. */
export const DPOP_MAX_HEADER_BYTES = 8192;
const MAX_JTI_CHARS = 256;
const MAX_HTM_CHARS = 32;
const MAX_NONCE_CHARS = 512;
const DPOP_TYP = "dpop+jwt";
const PUBLIC_KEY_TYPES = new Set(["EC", "RSA", "OKP"]);
/** What proofs may be signed with by default (RFC 9449 §5.1: asymmetric only); the metadata's dpop_signing_alg_values_supported. */
export const DPOP_ALGORITHMS: readonly string[] = ASYMMETRIC_JWS_ALGORITHMS;

export interface DpopCheck {
  /** The raw DPoP header value(s) as the HTTP layer saw them: undefined when absent; a string[] of more than one, or a value containing ',' (headers joined), means more than one header → refused. */
  header: string | string[] | undefined;
  /** The request method, compared to `htm` exactly (methods are case-sensitive, RFC 9110 §9.1). */
  method: string;
  /** The request's URL as the client addressed it (scheme://host[:port]/path); compared to `htu` after RFC 3986 §6 normalisation, query and fragment ignored on both sides. */
  url: string;
  /** When present, `ath` must equal base64url(SHA-256(token)) (§4.3 check 12). */
  accessToken?: string | undefined;
  /** When present, the proof key's RFC 7638 thumbprint must equal it (a token's cnf.jkt, §7.1). */
  expectedJkt?: string | undefined;
  now: Date;
}

export interface VerifiedDpopProof {
  /** RFC 7638 SHA-256 thumbprint of the proof key: what cnf.jkt binds. */
  jkt: string;
  /** The proof's public key, as its header carried it. */
  jwk: JWK;
  jti: string;
  iat: Date;
}

/** Remembers proofs seen within their window. Implemented by Store["dpopProofs"] (shared by replicas) and MemoryDpopReplayCache. */
export interface DpopReplayCache {
  /** true when (jkt, jti) was unseen and is now remembered until `until`; false when already seen. Atomic. */
  remember(key: string, until: Date, now: Date): Promise<boolean>;
}

/** Server nonces (RFC 9449 §8): the caller sends `DPoP-Nonce: current(now)` with use_dpop_nonce refusals. */
export interface DpopNonceSource {
  current(now: Date): string;
  accepts(nonce: string, now: Date): boolean;
}

const invalid = (why: string, internal?: string) => oauthError("dpop_proof_invalid", `the DPoP proof ${why}`, internal === undefined ? {} : { internal });

export class DpopVerifier {
  /** The algorithms proofs may be signed with: the metadata's dpop_signing_alg_values_supported. */
  readonly algorithms: readonly string[];
  private readonly windowMs: number;

  constructor(private readonly o: { replay: DpopReplayCache; iatWindowSeconds: number; nonces?: DpopNonceSource | undefined; algorithms?: readonly string[] | undefined }) {
    if (!(o.iatWindowSeconds > 0)) throw new Error("iatWindowSeconds must be positive");
    this.algorithms = asymmetricAlgorithms(o.algorithms ?? DPOP_ALGORITHMS);
    this.windowMs = o.iatWindowSeconds * 1000;
  }

  async verify(check: DpopCheck): Promise<VerifiedDpopProof> {
    // 1. exactly one DPoP header
    const proof = singleProof(check.header);
    // 2. a well-formed JWS compact serialisation; 4. typ; 5. alg; 7. jwk public
    const { alg, jwk } = this.proofHeader(proof);
    // 6. the signature, with the key the proof carries
    let payload: Uint8Array;
    try {
      const key = await importJWK(jwk, alg);
      if (key instanceof Uint8Array || key.type !== "public") throw invalid("jwk is not a public key");
      ({ payload } = await compactVerify(proof, key, { algorithms: [alg] }));
    } catch (e) {
      if (e instanceof HallmarkError) throw e;
      throw invalid("signature does not verify with its jwk", (e as Error).message);
    }
    // 3. the required claims
    const claims = proofClaims(payload);
    // 8. htm
    if (claims.htm !== check.method) throw invalid("is for another HTTP method (htm)", `htm ${claims.htm} for ${check.method}`);
    // 9. htu
    const htu = normalizeHtu(claims.htu);
    const target = normalizeHtu(check.url);
    if (target === undefined) throw new HallmarkError("internal", "the request URL given to the DPoP check is not an http(s) URL", { internal: check.url });
    if (htu === undefined || htu !== target) throw invalid("is for another URL (htu)", `htu ${claims.htu.slice(0, 256)} for ${target}`);
    // 10. the server's nonce, when it gives them
    if (this.o.nonces) {
      if (claims.nonce === undefined || !this.o.nonces.accepts(claims.nonce, check.now)) {
        throw oauthError("dpop_nonce_required", claims.nonce === undefined ? "the DPoP proof must carry the server's nonce" : "the DPoP proof's nonce is stale: use the current one");
      }
    }
    // 11. the creation time, within the window either way
    const iatMs = claims.iat * 1000;
    if (Math.abs(check.now.getTime() - iatMs) > this.windowMs) throw invalid("was not created within the accepted window (iat)", `iat ${claims.iat} at ${check.now.toISOString()}`);
    // 12. ath, when the proof accompanies an access token
    if (check.accessToken !== undefined) {
      const ath = createHash("sha256").update(check.accessToken, "ascii").digest("base64url");
      if (claims.ath === undefined || !sameString(claims.ath, ath)) throw invalid("is not for this access token (ath)");
    }
    // the key binding (§7.1): the token's cnf.jkt names this key
    let jkt: string;
    try {
      jkt = await calculateJwkThumbprint(jwk, "sha256");
    } catch (e) {
      throw invalid("jwk has no thumbprint", (e as Error).message);
    }
    if (check.expectedJkt !== undefined && !sameString(jkt, check.expectedJkt)) throw invalid("is signed by another key than the token is bound to (jkt)");
    // Last, so that only proofs that pass every other check take room in the cache. A proof
    // is acceptable until iat + window (one second more: iat has whole-second precision).
    const key = createHash("sha256").update(`${jkt}.${claims.jti}`, "utf8").digest("base64url");
    if (!(await this.o.replay.remember(key, new Date(iatMs + this.windowMs + 1000), check.now))) {
      throw oauthError("dpop_proof_replayed", "the DPoP proof was already used: make a new one for each request");
    }
    return { jkt, jwk, jti: claims.jti, iat: new Date(iatMs) };
  }

  private proofHeader(proof: string): { alg: string; jwk: JWK } {
    if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(proof)) throw invalid("is not a JWS in compact serialisation");
    let header: Record<string, unknown>;
    try {
      header = decodeProtectedHeader(proof) as Record<string, unknown>;
    } catch (e) {
      throw invalid("header is not a JSON object", (e as Error).message);
    }
    if (header.typ !== DPOP_TYP) throw invalid(`typ must be ${DPOP_TYP}`);
    const alg = header.alg;
    if (typeof alg !== "string" || !this.algorithms.includes(alg)) throw invalid(`alg must be one of ${this.algorithms.join(", ")}`, `alg ${String(alg).slice(0, 16)}`);
    const jwk = header.jwk;
    if (typeof jwk !== "object" || jwk === null || Array.isArray(jwk)) throw invalid("header has no jwk");
    const leaked = PRIVATE_JWK_MEMBERS.filter((m) => m in jwk);
    // A private key in a header was sent in the clear: never verify with it, never echo it.
    if (leaked.length > 0) throw invalid("jwk carries private key members: it must be the public key only", leaked.join(","));
    if (!PUBLIC_KEY_TYPES.has(String((jwk as JWK).kty))) throw invalid("jwk is not an EC, RSA or OKP public key");
    return { alg, jwk: jwk as JWK };
  }
}

function singleProof(header: string | string[] | undefined): string {
  if (header === undefined) throw oauthError("dpop_required", "a DPoP proof is required (the DPoP header)");
  if (Array.isArray(header)) {
    if (header.length !== 1) throw invalid("must be sent in exactly one DPoP header");
    header = header[0] as string;
  }
  if (header.length > DPOP_MAX_HEADER_BYTES) throw invalid(`header is longer than ${DPOP_MAX_HEADER_BYTES} bytes`);
  // HTTP joins repeated headers with ','; a compact JWS never contains one.
  if (header.includes(",")) throw invalid("must be sent in exactly one DPoP header");
  return header.trim();
}

interface ProofClaims {
  jti: string;
  htm: string;
  htu: string;
  iat: number;
  ath?: string | undefined;
  nonce?: string | undefined;
}

function proofClaims(payload: Uint8Array): ProofClaims {
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(payload).toString("utf8"));
  } catch {
    throw invalid("claims are not JSON");
  }
  if (typeof claims !== "object" || claims === null || Array.isArray(claims)) throw invalid("claims are not a JSON object");
  const c = claims as Record<string, unknown>;
  const str = (name: string, max: number): string => {
    const v = c[name];
    if (typeof v !== "string" || v.length === 0 || v.length > max) throw invalid(`must carry ${name} (a string of 1 to ${max} characters)`);
    return v;
  };
  const optStr = (name: string, max: number): string | undefined => (c[name] === undefined ? undefined : str(name, max));
  const jti = str("jti", MAX_JTI_CHARS);
  const htm = str("htm", MAX_HTM_CHARS);
  const htu = str("htu", DPOP_MAX_HEADER_BYTES);
  if (typeof c.iat !== "number" || !Number.isFinite(c.iat)) throw invalid("must carry iat (a NumericDate)");
  return { jti, htm, htu, iat: c.iat, ath: optStr("ath", 128), nonce: optStr("nonce", MAX_NONCE_CHARS) };
}

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * An http(s) URL without query and fragment, normalised as RFC 3986 §6.2.2 (syntax: case of
 * scheme, host and percent-encodings, unreserved characters decoded, dot-segments removed) and
 * §6.2.3 (scheme: default port dropped, empty path "/") say, so that equivalent URLs compare
 * equal (RFC 9449 §4.3 check 9). undefined when it is not an absolute http(s) URL or has userinfo.
 */
export function normalizeHtu(input: string): string | undefined {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    return undefined;
  }
  if ((url.protocol !== "https:" && url.protocol !== "http:") || url.username !== "" || url.password !== "") return undefined;
  const path = url.pathname.replace(/%[0-9A-Fa-f]{2}/g, (pct) => {
    const c = String.fromCharCode(parseInt(pct.slice(1), 16));
    return UNRESERVED.test(c) ? c : pct.toUpperCase();
  });
  return `${url.protocol}//${url.host}${path}`;
}

function sameString(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Replay memory for one process (a resource server outside Hallmark, a single-replica server).
 * Bounded: when `maxEntries` live proofs are held, new proofs are refused (fail closed: forgetting
 * a live proof would let it be replayed). Entries leave in insertion order once expired, which is
 * about their expiry order since every proof is remembered for the same window after its iat.
 */
export class MemoryDpopReplayCache implements DpopReplayCache {
  private readonly seen = new Map<string, number>();

  constructor(private readonly maxEntries = 100_000) {}

  async remember(key: string, until: Date, now: Date): Promise<boolean> {
    const t = now.getTime();
    for (const [k, expires] of this.seen) {
      if (expires > t) break;
      this.seen.delete(k);
    }
    const expires = this.seen.get(key);
    if (expires !== undefined && expires > t) return false;
    if (expires === undefined && this.seen.size >= this.maxEntries) {
      throw new HallmarkError("unavailable", "too many DPoP proofs within the replay window: try again shortly", { internal: `replay cache full (${this.maxEntries})` });
    }
    this.seen.delete(key);
    this.seen.set(key, until.getTime());
    return true;
  }

  get size(): number {
    return this.seen.size;
  }
}

/**
 * Server nonces that rotate every `periodSeconds`: the current one and the previous one are
 * accepted, so a nonce handed out just before a rotation still works for one more period. Each
 * nonce is an HMAC of the period's number under a random secret: unpredictable, and nothing to
 * store. Replicas: give every replica the same `secret` (and clocks in step within a period), or
 * a client that bounces between replicas is asked for a new nonce at every switch.
 */
export class RotatingDpopNonces implements DpopNonceSource {
  private readonly periodMs: number;
  private readonly secret: Buffer;

  constructor(o: { periodSeconds: number; secret?: Uint8Array | undefined }) {
    if (!(o.periodSeconds > 0)) throw new Error("periodSeconds must be positive");
    this.periodMs = o.periodSeconds * 1000;
    this.secret = o.secret === undefined ? randomBytes(32) : Buffer.from(o.secret);
    if (this.secret.length < 16) throw new Error("the nonce secret must be at least 16 bytes");
  }

  current(now: Date): string {
    return this.nonceOf(this.period(now));
  }

  accepts(nonce: string, now: Date): boolean {
    const p = this.period(now);
    return sameString(nonce, this.nonceOf(p)) || sameString(nonce, this.nonceOf(p - 1));
  }

  private period(now: Date): number {
    return Math.floor(now.getTime() / this.periodMs);
  }

  private nonceOf(period: number): string {
    return createHmac("sha256", this.secret).update(`dpop-nonce:${period}`).digest().subarray(0, 18).toString("base64url");
  }
}
