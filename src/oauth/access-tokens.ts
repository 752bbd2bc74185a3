import { createHash } from "node:crypto";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet, type JWTPayload } from "jose";
import type { AuditLog } from "../audit/log.js";
import { HallmarkError, isHallmarkError } from "../errors.js";
import { type Logged, logIndexOf } from "../service/logged.js";
import { AUDIT_EVENTS } from "../service/audit-events.js";
import type { Clock } from "../service/clock.js";
import type { AccessTokenSigner, DelegationLookup } from "../service/ports.js";
import type { TrustDomain } from "../spiffe/id.js";
import type { AccessTokenRecord, Store } from "../store/types.js";
import { ATTESTATION_CLAIM, type ActClaim, mintAccessToken } from "./access-token.js";
import type { AuthenticatedClient, ClientAuthenticator, ClientCredentials } from "./client-auth.js";
import { type DpopVerifier, normalizeHtu } from "./dpop.js";
import { isRateLimited } from "../service/rate-limit.js";
import { oauthError } from "./errors.js";

/**
 * The access tokens Hallmark issues, from minting to the end of their lineage: issue (sign with
 * the HSM token key and record), the ACTIVE check every introspection runs, introspection
 * (RFC 7662) and revocation (RFC 7009). A token is active iff its signature verifies with one of
 * our token keys, it has not expired, its record exists, and along its whole lineage (the token,
 * the Hallmark token it was exchanged from, and so on) no link is revoked or expired, every
 * link's delegation still exists and every link's actor node is not evicted. Revoking a token,
 * deleting a delegation or evicting an agent's node therefore deactivates everything derived
 * from it at once. Tokens never reach a log line or the audit log: a digest and the jti do.
 */

/** Algorithms our token keys sign with (jwtSchemeFor): nothing else verifies, whatever the header says. */
export const ACCESS_TOKEN_ALGORITHMS = ["ES256", "ES384", "RS256", "PS256"];
/** Far above any token we mint (a few KB with a deep act chain); larger input is inactive without parsing. */
export const MAX_ACCESS_TOKEN_CHARS = 16 * 1024;

export interface IssueAccessToken {
  client: AuthenticatedClient;
  subject: string;
  subjectIssuer: string;
  audience: string[];
  scope: string[];
  delegationId: string;
  /** The Hallmark access token the subject token was (when it was one of ours). */
  parentJti?: string | undefined;
  priorAct?: ActClaim | undefined;
  jkt?: string | undefined;
  expiresAt: Date;
  now: Date;
  /** What the exchange asked for and why it was granted: added to the issuance's audit record (never a token: digests only). */
  auditDetails?: Record<string, unknown> | undefined;
}

export interface IssuedAccessToken extends Logged {
  token: string;
  jti: string;
  kid: string;
  expiresAt: Date;
}

/** A token that is active now: its verified claims and its record. */
export interface ActiveAccessToken {
  claims: JWTPayload & Record<string, unknown>;
  record: AccessTokenRecord;
}

/**
 * What a resource server received with the token, sent along to introspection (a Hallmark
 * extension of RFC 7662: form parameters dpop_proof, dpop_method, dpop_url): the DPoP proof and
 * the method and URL of the request it came with. Each is absent when the form did not carry it.
 */
export interface PresentedDpopProof {
  proof: string | undefined;
  method: string | undefined;
  url: string | undefined;
}

/** The refusals of a proof at introspection: they make the answer inactive (RFC 7662 has no error for them). */
const PROOF_REFUSALS = new Set(["dpop_proof_invalid", "dpop_proof_replayed", "dpop_required", "dpop_nonce_required"]);

/** RFC 7662 §2.2: `{active:false}` alone, or the token's claims. */
export type IntrospectionAnswer = { active: false } | ({ active: true; token_type: "DPoP" | "Bearer" } & Record<string, unknown>);

export interface AccessTokenServiceDeps {
  trustDomain: TrustDomain;
  store: Pick<Store, "accessTokens" | "nodes">;
  signer: AccessTokenSigner;
  delegations: DelegationLookup;
  clients: ClientAuthenticator;
  audit: AuditLog;
  clock: Clock;
  /** `iss` of the tokens (delegation.issuer, else jwt.issuer, else the bound URL). */
  issuer: () => string;
  /**
   * Checks the DPoP proofs resource servers send along to introspection: the datastore's replay
   * cache (shared with the token endpoint) and the iat window, but no server nonces (a proof made
   * for a resource server carries that server's nonce, not ours).
   */
  introspectionDpop: DpopVerifier;
}

type Verdict = { active: true; token: ActiveAccessToken } | { active: false; reason: string; jti?: string | undefined };

export class AccessTokenService {
  constructor(private readonly d: AccessTokenServiceDeps) {}

  /** Mints, records and audits an access token (token exchange calls this once every check has passed). */
  async issue(r: IssueAccessToken): Promise<IssuedAccessToken> {
    const minted = await mintAccessToken(this.d.signer, {
      issuer: this.d.issuer(),
      subject: r.subject,
      audience: r.audience,
      clientId: r.client.clientId,
      actorIssuer: this.d.trustDomain.idString,
      scope: r.scope,
      priorAct: r.priorAct,
      jkt: r.jkt,
      attestation: { attestor: r.client.attestor, node: r.client.nodeId, keyResident: r.client.keyResident },
      issuedAt: r.now,
      expiresAt: r.expiresAt,
    });
    await this.d.store.accessTokens.record({
      jti: minted.jti,
      parentJti: r.parentJti,
      delegationId: r.delegationId,
      clientId: r.client.clientId,
      actorNodeId: r.client.nodeId,
      subject: r.subject,
      subjectIssuer: r.subjectIssuer,
      scope: r.scope.join(" "),
      audience: r.audience,
      jkt: r.jkt,
      keyId: minted.keyId,
      issuedAt: r.now,
      expiresAt: minted.expiresAt,
    });
    const record = await this.d.audit.append({
      time: r.now,
      event: AUDIT_EVENTS.issueAccessToken,
      outcome: "success",
      actor: r.client.clientId,
      spiffeId: r.client.clientId,
      attestor: r.client.attestor,
      serial: minted.jti,
      details: {
        subject: r.subject,
        subject_issuer: r.subjectIssuer,
        delegation: r.delegationId,
        parent_jti: r.parentJti ?? null,
        scope: r.scope.join(" "),
        audience: r.audience,
        dpop_bound: r.jkt !== undefined,
        expires_at: minted.expiresAt.toISOString(),
        ...r.auditDetails,
      },
    });
    return { token: minted.token, jti: minted.jti, kid: minted.kid, expiresAt: minted.expiresAt, logIndex: logIndexOf(record) };
  }

  /** The token when it is active at `now`, else undefined (never throws for a bad token). */
  async active(token: string, now: Date = this.d.clock()): Promise<ActiveAccessToken | undefined> {
    const v = await this.verdict(token, now);
    return v.active ? v.token : undefined;
  }

  /**
   * RFC 7662: the caller authenticates as a workload of the trust domain; any token may be asked
   * about. Audited. With `presented.proof` (what the resource server received), the answer is
   * active only when that proof verifies for this token (RFC 9449 §4.3 and §7.1: ath, the key of
   * cnf.jkt, htm and htu of the resource server's request, iat, never seen before); a bad proof is
   * `{active:false}` and a refused audit record with its code. Without a proof, a bound token is
   * answered active with its cnf and token_type DPoP, for resource servers that check proofs themselves.
   */
  async introspect(credentials: ClientCredentials, token: string | undefined, presented?: PresentedDpopProof): Promise<IntrospectionAnswer> {
    const now = this.d.clock();
    const client = await this.authenticated(credentials, now, AUDIT_EVENTS.oauthIntrospect, token);
    if (token === undefined) await this.refuseMissingToken(AUDIT_EVENTS.oauthIntrospect, now, client);
    const proof = await this.proofRequest(presented, now, client, token!);
    let v = await this.verdict(token!, now);
    let code: string | undefined;
    if (v.active && proof) {
      const bad = await this.proofRefusal(v.token, token!, proof, now);
      if (bad) {
        code = bad.code;
        v = { active: false, reason: bad.reason, jti: v.token.record.jti };
      }
    }
    await this.d.audit.append({
      time: now,
      event: AUDIT_EVENTS.oauthIntrospect,
      outcome: code === undefined ? "success" : "refused",
      ...(code === undefined ? {} : { code }),
      actor: client.clientId,
      spiffeId: client.clientId,
      ...(v.active ? { serial: v.token.record.jti } : v.jti ? { serial: v.jti } : {}),
      details: { active: v.active, ...(v.active ? {} : { reason: v.reason }), dpop_proof: proof !== undefined, token_sha256: tokenDigest(token) },
    });
    if (!v.active) return { active: false };
    const c = v.token.claims;
    const cnf = c.cnf as { jkt?: unknown } | undefined;
    return {
      active: true,
      ...pick(c, ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "act", "cnf", ATTESTATION_CLAIM]),
      token_type: typeof cnf?.jkt === "string" ? "DPoP" : "Bearer",
    };
  }

  /**
   * The proof to check and the request it must be for, or undefined when none was sent. A proof
   * without the resource server's method and absolute http(s) URL cannot be checked: the request
   * is malformed (invalid_request, audited), not the token inactive.
   */
  private async proofRequest(presented: PresentedDpopProof | undefined, now: Date, client: AuthenticatedClient, token: string): Promise<{ proof: string; method: string; url: string } | undefined> {
    if (presented?.proof === undefined) return undefined;
    const { proof, method, url } = presented;
    if (!method || !url || normalizeHtu(url) === undefined) {
      const e = oauthError("oauth_invalid_request", "dpop_proof needs dpop_method and dpop_url: the method and absolute http(s) URL of the request the resource server received");
      await this.auditRefusal(AUDIT_EVENTS.oauthIntrospect, now, client.clientId, e.code, e.message, token);
      throw e;
    }
    return { proof, method, url };
  }

  /** Why the proof does not show possession of the token's key for that request (code and reason), or undefined when it does. */
  private async proofRefusal(active: ActiveAccessToken, token: string, p: { proof: string; method: string; url: string }, now: Date): Promise<{ code: string; reason: string } | undefined> {
    const jkt = (active.claims.cnf as { jkt?: unknown } | undefined)?.jkt;
    // A proof beside an unbound token proves nothing about the token: its sender is not shown to be the holder.
    if (typeof jkt !== "string") return { code: "dpop_proof_invalid", reason: "the token is not DPoP-bound: no key for the proof to match" };
    try {
      await this.d.introspectionDpop.verify({ header: p.proof, method: p.method, url: p.url, accessToken: token, expectedJkt: jkt, now });
      return undefined;
    } catch (e) {
      if (!(e instanceof HallmarkError) || !PROOF_REFUSALS.has(e.code)) throw e;
      return { code: e.code, reason: e.internal === undefined ? e.message : `${e.message} (${e.internal})` };
    }
  }

  /**
   * RFC 7009: revokes a token issued to the authenticated client, and with it every token
   * exchanged from it (their records say so too; the lineage check would deactivate them anyway).
   * A token that does not verify, is unknown or already expired needs nothing: success (§2.2).
   */
  async revoke(credentials: ClientCredentials, token: string | undefined): Promise<void> {
    const now = this.d.clock();
    const client = await this.authenticated(credentials, now, AUDIT_EVENTS.oauthRevoke, token);
    if (token === undefined) await this.refuseMissingToken(AUDIT_EVENTS.oauthRevoke, now, client);
    const claims = await this.verifiedClaims(token!, now);
    const record = typeof claims?.jti === "string" ? await this.d.store.accessTokens.get(claims.jti) : undefined;
    if (record && record.clientId !== client.clientId) {
      const e = oauthError("token_not_issued_to_client", "the token was issued to another client");
      await this.auditRefusal(AUDIT_EVENTS.oauthRevoke, now, client.clientId, e.code, e.message, token, record.jti);
      throw e;
    }
    let descendants: string[] = [];
    if (record) {
      await this.d.store.accessTokens.revoke(record.jti, now);
      descendants = await this.d.store.accessTokens.descendants(record.jti);
      for (const jti of descendants) await this.d.store.accessTokens.revoke(jti, now);
    }
    await this.d.audit.append({
      time: now,
      event: AUDIT_EVENTS.oauthRevoke,
      outcome: "success",
      actor: client.clientId,
      spiffeId: client.clientId,
      ...(record ? { serial: record.jti } : {}),
      details: { revoked: record !== undefined, descendants, token_sha256: tokenDigest(token) },
    });
  }

  private async authenticated(credentials: ClientCredentials, now: Date, event: string, token: string | undefined): Promise<AuthenticatedClient> {
    try {
      return await this.d.clients.authenticate(credentials, now);
    } catch (e) {
      // A caller past its allowance of unauthenticated refusals is counted in a summary instead.
      if (isRateLimited(e)) throw e;
      const code = isHallmarkError(e) ? e.code : "internal";
      await this.auditRefusal(event, now, "unauthenticated", code, isHallmarkError(e) ? e.message : "internal error", token);
      throw e;
    }
  }

  /** RFC 7662 §2.1 and RFC 7009 §2.1: `token` is REQUIRED. */
  private async refuseMissingToken(event: string, now: Date, client: AuthenticatedClient): Promise<never> {
    const e = oauthError("oauth_invalid_request", "the token parameter is required");
    await this.auditRefusal(event, now, client.clientId, e.code, e.message, undefined);
    throw e;
  }

  private async auditRefusal(event: string, now: Date, actor: string, code: string, reason: string, token: string | undefined, jti?: string): Promise<void> {
    await this.d.audit.append({
      time: now,
      event,
      outcome: code === "internal" ? "error" : "refused",
      code,
      actor,
      ...(jti ? { serial: jti } : {}),
      details: { reason, token_sha256: tokenDigest(token) },
    });
  }

  /** The signature, header and claims checks of an access token of ours; undefined when they fail. */
  private async verifiedClaims(token: string, now: Date): Promise<(JWTPayload & Record<string, unknown>) | undefined> {
    if (token.length === 0 || token.length > MAX_ACCESS_TOKEN_CHARS) return undefined;
    try {
      const { alg } = decodeProtectedHeader(token);
      if (typeof alg !== "string" || !ACCESS_TOKEN_ALGORITHMS.includes(alg)) return undefined;
      const jwks = createLocalJWKSet((await this.d.signer.accessTokenJwks()) as unknown as JSONWebKeySet);
      const { payload } = await jwtVerify(token, jwks, {
        algorithms: ACCESS_TOKEN_ALGORITHMS,
        typ: "at+jwt",
        issuer: this.d.issuer(),
        currentDate: now,
        requiredClaims: ["jti", "sub", "exp", "iat", "client_id"],
      });
      return payload as JWTPayload & Record<string, unknown>;
    } catch {
      return undefined;
    }
  }

  private async verdict(token: string, now: Date): Promise<Verdict> {
    const claims = await this.verifiedClaims(token, now);
    if (!claims) return { active: false, reason: "signature, header or claims do not verify" };
    const jti = String(claims.jti);
    const chain = await this.d.store.accessTokens.lineage(jti);
    const record = chain[0];
    if (!record || record.jti !== jti) return { active: false, reason: "no record of this token", jti };
    if (record.clientId !== claims.client_id || record.subject !== claims.sub) return { active: false, reason: "the record does not match the token", jti };
    if (chain[chain.length - 1]!.parentJti !== undefined) return { active: false, reason: "the lineage is broken (an ancestor is gone)", jti };
    for (const link of chain) {
      const why = await this.linkInactive(link, now);
      if (why) return { active: false, reason: link === record ? why : `ancestor ${link.jti}: ${why}`, jti };
    }
    return { active: true, token: { claims, record } };
  }

  private async linkInactive(link: AccessTokenRecord, now: Date): Promise<string | undefined> {
    if (link.revokedAt) return "revoked";
    if (link.expiresAt.getTime() <= now.getTime()) return "expired";
    if (!(await this.d.delegations.exists(link.delegationId))) return `delegation ${link.delegationId} no longer exists`;
    const node = await this.d.store.nodes.get(link.actorNodeId);
    if (!node || node.evicted) return `the actor's node ${link.actorNodeId} is evicted`;
    return undefined;
  }
}

/** A short digest that names a token in the audit log without revealing it. */
export function tokenDigest(token: string | undefined): string | null {
  return token === undefined ? null : createHash("sha256").update(token).digest("hex").slice(0, 32);
}

function pick(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
}
