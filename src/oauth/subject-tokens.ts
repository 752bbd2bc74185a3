import { type JWK, type JWTPayload, type JWTVerifyGetKey, type ProtectedHeaderParameters, createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import type { Logger } from "pino";
import type { ServerConfig } from "../config/server.js";
import { HallmarkError } from "../errors.js";
import { SpiffeId, TrustDomain } from "../spiffe/id.js";
import { asymmetricAlgorithms } from "./algorithms.js";
import { oauthError } from "./errors.js";
import { scopeClaim } from "./scope.js";
import { TOKEN_TYPES } from "./token-request.js";
import { type FetchJwks, FileKeySource, type KeySource, RemoteKeySource, fetchJwksOverHttps } from "./jwks-source.js";

/**
 * Verifying the tokens a token exchange starts from (RFC 8693 §2.1 subject_token): a person's
 * token from a configured issuer, or one of Hallmark's own (an access token it issued, a JWT-SVID
 * of its trust domain) when delegations chain. The unverified `iss` only chooses which configured
 * key set to try; everything the caller relies on comes out of a verified token.
 */

export type DelegationConfig = ServerConfig["delegation"];
type SubjectIssuerConfig = DelegationConfig["subjectIssuers"][number];

/** The token types a subject token may be (RFC 8693 §3), declared with the request's parameters. */
export const TOKEN_TYPE = TOKEN_TYPES;

export interface ActClaim {
  sub: string;
  iss?: string;
  act?: ActClaim;
  [k: string]: unknown;
}

export type SubjectTokenOrigin = "external" | "hallmark-access-token" | "hallmark-jwt-svid";

export interface VerifiedSubjectToken {
  tokenType: string;
  issuer: string;
  subject: string;
  audience: string[];
  expiresAt: Date;
  issuedAt?: Date | undefined;
  /** From `scope` (space-separated) or `scp` (an array, or a space-separated string as some IdPs send it). */
  scope?: string[] | undefined;
  /** The delegation chain so far (RFC 8693 §4.1), shape checked. */
  act?: ActClaim | undefined;
  /** Levels of `act`: 0 when none. */
  actDepth: number;
  /** RFC 8693 §4.4: who may act for this subject. */
  mayAct?: { sub?: string; iss?: string } | undefined;
  /** cnf.jkt (RFC 9449 §6.1): the token is bound to this DPoP key. */
  cnfJkt?: string | undefined;
  jti?: string | undefined;
  /** "external" (a configured subject issuer), "hallmark-access-token", "hallmark-jwt-svid". */
  origin: SubjectTokenOrigin;
  claims: Record<string, unknown>;
}

export interface OwnTokenKeys {
  /** Hallmark's own issuer (delegation.issuer): access tokens it issued (typ at+jwt) are verified with accessTokenJwks(); JWT-SVIDs of the trust domain with jwtSvidJwks() and must have an aud containing `issuer` (or the token endpoint URL). */
  issuer: string;
  trustDomain: string;
  accessTokenJwks(): Promise<{ keys: JWK[] }>;
  jwtSvidJwks(): Promise<{ keys: JWK[] }>;
  /** The token endpoint URL, also accepted as a JWT-SVID's audience. */
  tokenEndpoint?: string | undefined;
  /** jwt.issuer, when it differs from `issuer`: the `iss` JWT-SVIDs carry (they may carry none). */
  jwtSvidIssuer?: string | undefined;
}

/** 16 KiB: far above any real ID or access token (a few hundred bytes to 2 KiB), far below what would cost us to parse. */
export const DEFAULT_MAX_SUBJECT_TOKEN_BYTES = 16 * 1024;
/** Clock skew allowed on nbf and iat (not on exp: a token is never used past its end). */
const LEEWAY_SECONDS = 30;
const MAX_CLAIM_CHARS = 1024;
const JKT = /^[A-Za-z0-9_-]{43}$/;

const KNOWN_TYPES = new Set<string>(Object.values(TOKEN_TYPE));
/** Which declared token types fit each origin: our access tokens are access tokens or JWTs; a JWT-SVID is a JWT. */
const TYPES_OF: Record<SubjectTokenOrigin, ReadonlySet<string>> = {
  external: KNOWN_TYPES,
  "hallmark-access-token": new Set([TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt]),
  "hallmark-jwt-svid": new Set([TOKEN_TYPE.jwt]),
};

const invalid = (why: string, internal?: string) => oauthError("subject_token_invalid", `the subject token ${why}`, internal === undefined ? {} : { internal });

interface Candidate {
  origin: SubjectTokenOrigin;
  issuer: string;
  /** The `iss` jose must see exactly; undefined for a JWT-SVID (its iss, optional, is checked by us). */
  expectIss: string | undefined;
  audiences: string[];
  keys: (now: Date) => Promise<JWTVerifyGetKey>;
  refresh: (now: Date) => Promise<boolean>;
  typ?: string;
}

export class SubjectTokenVerifier {
  private readonly algorithms: string[];
  private readonly sources = new Map<string, { config: SubjectIssuerConfig; source: KeySource }>();
  private readonly trustDomain: TrustDomain;
  private readonly maxTokenBytes: number;
  private readonly ownKeySets = new WeakMap<object, JWTVerifyGetKey>();

  constructor(
    private readonly o: {
      issuers: DelegationConfig["subjectIssuers"];
      own: OwnTokenKeys;
      maxActDepth: number;
      maxTokenBytes?: number | undefined;
      fetchJwks?: FetchJwks | undefined;
      algorithms?: readonly string[] | undefined;
      log?: Logger | undefined;
    },
  ) {
    this.algorithms = asymmetricAlgorithms(o.algorithms);
    this.maxTokenBytes = o.maxTokenBytes ?? DEFAULT_MAX_SUBJECT_TOKEN_BYTES;
    this.trustDomain = TrustDomain.parse(o.own.trustDomain);
    o.issuers.forEach((config, i) => {
      const field = `delegation.subjectIssuers[${i}]`;
      const source: KeySource =
        config.jwksFile !== undefined
          ? new FileKeySource(config.issuer, config.jwksFile, `${field}.jwksFile`, (message) => o.log?.warn({ issuer: config.issuer }, message))
          : new RemoteKeySource({
              issuer: config.issuer,
              uri: config.jwksUri as string,
              caFile: config.caFile,
              field,
              refreshSeconds: config.jwksRefresh,
              fetchJwks: o.fetchJwks ?? fetchJwksOverHttps,
            });
      if (this.sources.has(config.issuer)) throw new HallmarkError("config_invalid", `${field}: issuer ${config.issuer} is configured twice`);
      this.sources.set(config.issuer, { config, source });
    });
  }

  /** Loads every configured key set once, so that a start with an unreadable file or unreachable issuer says so at once. */
  async ready(now: Date): Promise<void> {
    for (const { source } of this.sources.values()) await source.keys(now);
  }

  async verify(token: string, tokenType: string, now: Date): Promise<VerifiedSubjectToken> {
    if (!KNOWN_TYPES.has(tokenType)) throw oauthError("oauth_unsupported_token_type", `subject_token_type must be one of ${[...KNOWN_TYPES].join(", ")}`);
    if (typeof token !== "string" || Buffer.byteLength(token, "utf8") > this.maxTokenBytes) throw invalid(`is larger than ${this.maxTokenBytes} bytes`);
    if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) throw invalid("is not a signed JWT in compact serialisation");
    let header: ProtectedHeaderParameters;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      unverified = decodeJwt(token);
    } catch (e) {
      throw invalid("is not a well-formed JWT", (e as Error).message);
    }
    if (typeof header.alg !== "string" || !this.algorithms.includes(header.alg)) throw invalid(`must be signed with one of ${this.algorithms.join(", ")}`, `alg ${String(header.alg).slice(0, 16)}`);

    const candidate = this.candidateFor(header, unverified);
    if (!TYPES_OF[candidate.origin].has(tokenType)) throw invalid(`is not of the declared type ${tokenType}`, candidate.origin);
    const payload = await this.verifySignedClaims(token, candidate, now);
    return this.claimsOf(payload, candidate, tokenType, now);
  }

  /** Chooses which keys to try, by the unverified `iss` (and `typ`, `sub` for Hallmark's own tokens); nothing else is read before the signature verifies. */
  private candidateFor(header: ProtectedHeaderParameters, unverified: JWTPayload): Candidate {
    const own = this.o.own;
    const iss = unverified.iss;
    if (iss !== undefined && typeof iss !== "string") throw invalid("has an iss that is not a string");
    const typ = typeof header.typ === "string" ? header.typ.toLowerCase().replace(/^application\//, "") : undefined;
    const ownKeys = (jwks: () => Promise<{ keys: JWK[] }>) => async () => {
      const doc = await jwks();
      let getKey = this.ownKeySets.get(doc);
      if (!getKey) this.ownKeySets.set(doc, (getKey = createLocalJWKSet(doc)));
      return getKey;
    };
    const noRefresh = async () => false;
    if (iss === own.issuer && typ === "at+jwt") {
      return { origin: "hallmark-access-token", issuer: own.issuer, expectIss: own.issuer, audiences: [], keys: ownKeys(() => own.accessTokenJwks()), refresh: noRefresh, typ: "at+jwt" };
    }
    const svidIssuers = [undefined, own.issuer, own.jwtSvidIssuer];
    if (typeof unverified.sub === "string" && unverified.sub.startsWith(`${this.trustDomain.idString}/`) && svidIssuers.includes(iss) && typ !== "at+jwt") {
      const audiences = [own.issuer, ...(own.tokenEndpoint === undefined ? [] : [own.tokenEndpoint])];
      return { origin: "hallmark-jwt-svid", issuer: iss ?? own.issuer, expectIss: undefined, audiences, keys: ownKeys(() => own.jwtSvidJwks()), refresh: noRefresh };
    }
    const configured = iss === undefined ? undefined : this.sources.get(iss);
    if (configured) {
      const { config, source } = configured;
      return { origin: "external", issuer: config.issuer, expectIss: config.issuer, audiences: config.audiences, keys: (now) => source.keys(now), refresh: (now) => source.refreshForUnknownKid(now) };
    }
    if (iss === undefined) throw invalid("has no iss");
    if (iss === own.issuer) throw invalid("is a token of this server that is neither an access token nor a JWT-SVID");
    throw oauthError("subject_token_issuer_untrusted", "the subject token's issuer is not a configured subject issuer", { internal: `iss ${iss.slice(0, 256)}` });
  }

  private async verifySignedClaims(token: string, c: Candidate, now: Date): Promise<JWTPayload> {
    const options = {
      algorithms: this.algorithms,
      audience: c.origin === "hallmark-access-token" ? undefined : c.audiences,
      issuer: c.expectIss,
      currentDate: now,
      clockTolerance: LEEWAY_SECONDS,
      requiredClaims: ["exp", "sub"],
      typ: c.typ,
    };
    for (let attempt = 0; ; attempt++) {
      const getKey = await c.keys(now);
      try {
        return (await jwtVerify(token, getKey, options)).payload;
      } catch (e) {
        const code = (e as { code?: string }).code;
        // The issuer rotated since we fetched its keys: fetch again (rate-limited), then once more.
        if (code === "ERR_JWKS_NO_MATCHING_KEY" && attempt === 0 && (await c.refresh(now))) continue;
        throw refusalOf(e);
      }
    }
  }

  private claimsOf(payload: JWTPayload, c: Candidate, tokenType: string, now: Date): VerifiedSubjectToken {
    const claims = payload as Record<string, unknown>;
    // jose allowed exp within the leeway; we do not: an exchanged token must never outlive it.
    const exp = payload.exp as number;
    if (exp * 1000 <= now.getTime()) throw oauthError("subject_token_expired", "the subject token has expired");
    if (payload.iat !== undefined && payload.iat * 1000 > now.getTime() + LEEWAY_SECONDS * 1000) throw oauthError("subject_token_expired", "the subject token was issued in the future (iat)");
    const subject = boundedString(claims.sub, "sub");
    if (c.origin === "hallmark-jwt-svid") {
      if (claims.iss !== undefined && claims.iss !== this.o.own.issuer && claims.iss !== this.o.own.jwtSvidIssuer) throw invalid("has another iss than this server's");
      let id: SpiffeId;
      try {
        id = SpiffeId.parse(subject);
      } catch {
        throw invalid("is a JWT-SVID whose sub is not a SPIFFE ID");
      }
      if (!id.memberOf(this.trustDomain)) throw invalid("is a JWT-SVID of another trust domain");
    }
    const aud = claims.aud;
    const audience = aud === undefined ? [] : Array.isArray(aud) ? aud.map((a) => boundedString(a, "aud")) : [boundedString(aud, "aud")];
    const act = claims.act === undefined ? undefined : parseAct(claims.act, this.o.maxActDepth);
    return {
      tokenType,
      issuer: c.issuer,
      subject,
      audience,
      expiresAt: new Date(exp * 1000),
      issuedAt: payload.iat === undefined ? undefined : new Date(payload.iat * 1000),
      scope: scopeOf(claims),
      act: act?.claim,
      actDepth: act?.depth ?? 0,
      mayAct: claims.may_act === undefined ? undefined : parseMayAct(claims.may_act),
      cnfJkt: parseCnfJkt(claims.cnf),
      jti: claims.jti === undefined ? undefined : boundedString(claims.jti, "jti"),
      origin: c.origin,
      claims,
    };
  }
}

/** jose's verdicts as our codes: the caller hears which check failed, never the token. */
function refusalOf(e: unknown): HallmarkError {
  if (e instanceof HallmarkError) return e;
  const err = e as { code?: string; claim?: string; message?: string };
  switch (err.code) {
    case "ERR_JWT_EXPIRED":
      return oauthError("subject_token_expired", "the subject token has expired");
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      if (err.claim === "nbf" || err.claim === "iat") return oauthError("subject_token_expired", `the subject token is not yet valid (${err.claim})`);
      if (err.claim === "aud") return oauthError("subject_token_audience", "the subject token is not for an audience this issuer's configuration accepts");
      if (err.claim === "iss") return oauthError("subject_token_issuer_untrusted", "the subject token's issuer does not match");
      return invalid(`fails the check of ${err.claim ?? "a claim"}`, err.message);
    case "ERR_JWKS_NO_MATCHING_KEY":
      return invalid("names a key (kid) its issuer does not publish");
    default:
      return invalid("does not verify", `${err.code ?? ""} ${err.message ?? ""}`.trim());
  }
}

function boundedString(v: unknown, name: string): string {
  if (typeof v !== "string" || v.length === 0 || v.length > MAX_CLAIM_CHARS) throw invalid(`has a ${name} that is not a string of 1 to ${MAX_CLAIM_CHARS} characters`);
  return v;
}

/**
 * The `act` chain (RFC 8693 §4.1): each level an object with a string `sub`, an optional string
 * `iss` and optionally the next level in `act`. Walked without recursion and stopped as soon as it
 * is deeper than allowed, so a hostile nesting costs nothing.
 */
export function parseAct(value: unknown, maxDepth: number): { claim: ActClaim; depth: number } {
  let depth = 0;
  for (let level: unknown = value; level !== undefined; level = (level as ActClaim).act) {
    depth++;
    if (depth > maxDepth) throw oauthError("act_too_deep", `the subject token's delegation chain is deeper than ${maxDepth}`);
    if (typeof level !== "object" || level === null || Array.isArray(level)) throw invalid("has an act claim that is not an object");
    const l = level as Record<string, unknown>;
    boundedString(l.sub, "act.sub");
    if (l.iss !== undefined) boundedString(l.iss, "act.iss");
  }
  return { claim: value as ActClaim, depth };
}

/** RFC 8693 §4.4 may_act: an object naming who may act (sub and/or iss); an empty one would name nobody, and is refused rather than read as "anyone". */
export function parseMayAct(value: unknown): { sub?: string; iss?: string } {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalid("has a may_act claim that is not an object");
  const v = value as Record<string, unknown>;
  const out: { sub?: string; iss?: string } = {};
  if (v.sub !== undefined) out.sub = boundedString(v.sub, "may_act.sub");
  if (v.iss !== undefined) out.iss = boundedString(v.iss, "may_act.iss");
  if (out.sub === undefined && out.iss === undefined) throw invalid("has a may_act claim that names no actor (sub or iss)");
  return out;
}

function scopeOf(claims: Record<string, unknown>): string[] | undefined {
  const r = scopeClaim(claims);
  if ("invalid" in r) throw invalid(r.invalid);
  return r.scope;
}

function parseCnfJkt(cnf: unknown): string | undefined {
  if (cnf === undefined) return undefined;
  if (typeof cnf !== "object" || cnf === null || Array.isArray(cnf)) throw invalid("has a cnf claim that is not an object");
  const jkt = (cnf as Record<string, unknown>).jkt;
  if (jkt === undefined) return undefined;
  if (typeof jkt !== "string" || !JKT.test(jkt)) throw invalid("has a cnf.jkt that is not a SHA-256 JWK thumbprint");
  return jkt;
}
