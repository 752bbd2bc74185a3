import type { AuditLog } from "../audit/log.js";
import { isHallmarkError } from "../errors.js";
import { AUDIT_EVENTS } from "../service/audit-events.js";
import type { Clock } from "../service/clock.js";
import type { DelegationLookup } from "../service/ports.js";
import type { TrustDomain } from "../spiffe/id.js";
import type { ActClaim } from "./access-token.js";
import { type AccessTokenService, tokenDigest } from "./access-tokens.js";
import type { AuthenticatedClient, ClientAuthenticator, ClientCredentials } from "./client-auth.js";
import { decideDelegation } from "./delegation-policy.js";
import type { DpopNonceSource, DpopVerifier, VerifiedDpopProof } from "./dpop.js";
import { isRateLimited } from "../service/rate-limit.js";
import { oauthError } from "./errors.js";
import { OAUTH_PATHS, endpointUrl } from "./metadata.js";
import { type SubjectTokenVerifier, TOKEN_TYPE, type VerifiedSubjectToken } from "./subject-tokens.js";
import { type TokenExchangeForm, type TokenExchangeRequest, parseTokenExchangeRequest } from "./token-request.js";

/**
 * The token exchange (RFC 8693) behind POST /oauth2/token, no HTTP in it: the client
 * authenticates with its SVID, proves its DPoP key, hands in the person's token (and optionally
 * its JWT-SVID as actor token); the delegation policy decides what it may have; an access token
 * acting for the person, bound to the proof's key, comes out. Every exchange and every refusal
 * leaves exactly one audit record: the issuance's (issue_access_token, success) or the refusal's
 * (issue_access_token, refused, with the code and the internal reason). Tokens never reach a
 * record: digests do.
 *
 * Choices where the RFCs leave room:
 * - issued_token_type is what requested_token_type asked for: access_token by default, or jwt,
 *   since an RFC 9068 access token is both; the token is the same either way.
 * - scope is always in the answer (RFC 8693 §2.2.1 requires it only when it differs from the
 *   request): a client never has to work out what it got.
 * - token_type is DPoP whenever a proof was presented, Bearer only when none was and neither the
 *   configuration nor the delegation requires one.
 */

export interface TokenExchangeDeps {
  trustDomain: TrustDomain;
  clients: Pick<ClientAuthenticator, "authenticate">;
  dpop: Pick<DpopVerifier, "verify">;
  /** Present when delegation.dpop.nonce: the route sends its current nonce with every answer. */
  nonces?: DpopNonceSource | undefined;
  subjects: Pick<SubjectTokenVerifier, "verify">;
  delegations: Pick<DelegationLookup, "candidatesFor">;
  tokens: Pick<AccessTokenService, "issue" | "active">;
  audit: AuditLog;
  clock: Clock;
  /** delegation.issuer (else the OIDC issuer, else the bound URL): the token endpoint is under it. */
  issuer: () => string;
  maxActDepth: number;
  /** delegation.accessTokenTtl */
  accessTokenTtlSeconds: number;
  /** delegation.dpop.required */
  dpopRequired: boolean;
}

export interface TokenExchangeCall {
  /** The form as the route parsed it (shape only). */
  form: TokenExchangeForm;
  credentials: ClientCredentials;
  /** The DPoP header value(s), as the HTTP layer saw them. */
  dpop: string | string[] | undefined;
}

/** RFC 8693 §2.2.1 */
export interface TokenExchangeResponse {
  access_token: string;
  issued_token_type: string;
  token_type: "DPoP" | "Bearer";
  expires_in: number;
  scope: string;
  /** The leaf of the exchange's audit record in the transparency log: its receipt is fetched by it. */
  log_index: number;
}

/** What the audit record of an exchange says, gathered as the checks pass. */
interface ExchangeRecord {
  client?: AuthenticatedClient | undefined;
  subject?: VerifiedSubjectToken | undefined;
  asked?: Record<string, unknown> | undefined;
  subjectTokenDigest?: string | null;
}

export class TokenExchangeService {
  constructor(private readonly d: TokenExchangeDeps) {}

  /** The URL proofs must name (htu): the token endpoint under the issuer, as the metadata publishes it. */
  get tokenEndpoint(): string {
    return endpointUrl(this.d.issuer(), OAUTH_PATHS.token);
  }

  /** The nonce to hand out now (RFC 9449 §8), when nonces are on. */
  nonce(now: Date = this.d.clock()): string | undefined {
    return this.d.nonces?.current(now);
  }

  async exchange(call: TokenExchangeCall): Promise<TokenExchangeResponse> {
    const now = this.d.clock();
    const rec: ExchangeRecord = { subjectTokenDigest: tokenDigest(call.form.subject_token) };
    try {
      return await this.run(call, now, rec);
    } catch (e) {
      // A caller past its allowance of unauthenticated refusals is counted in a summary instead.
      if (!isRateLimited(e)) await this.auditRefusal(e, now, rec);
      throw e;
    }
  }

  private async run(call: TokenExchangeCall, now: Date, rec: ExchangeRecord): Promise<TokenExchangeResponse> {
    const client = (rec.client = await this.d.clients.authenticate(call.credentials, now));
    const req = parseTokenExchangeRequest(call.form);
    rec.asked = askedFor(req, call.dpop !== undefined);

    // The proof comes before the tokens are looked at: a client without the server's nonce learns
    // it (use_dpop_nonce) before anything costly is done.
    const proof = call.dpop !== undefined || this.d.dpopRequired ? await this.d.dpop.verify({ header: call.dpop, method: "POST", url: this.tokenEndpoint, now }) : undefined;

    const subject = (rec.subject = await this.d.subjects.verify(req.subjectToken, req.subjectTokenType, now));
    if (req.actorToken !== undefined) await this.checkActor(req.actorToken, client, now);

    // One of our own access tokens (a chain): it must still be active, along its whole lineage,
    // and the new token joins that lineage, so that revoking any ancestor reaches it.
    let parentJti: string | undefined;
    if (subject.origin === "hallmark-access-token") {
      const active = await this.d.tokens.active(req.subjectToken, now);
      if (!active) throw oauthError("subject_token_revoked", "the subject token is not active: it, or a token it was exchanged from, was revoked, or its delegation or actor's node is gone");
      parentJti = active.record.jti;
    }

    // A DPoP-bound subject token (cnf.jkt) is usable only by whoever holds its key, and that
    // includes exchanging it: the proof of this request must be signed by THAT key. Otherwise a
    // stolen bound token could be exchanged by the thief for a fresh token bound to the thief's
    // own key, and the binding would be worth nothing. The new token is therefore bound to the
    // same key: a binding is never dropped, nor moved to another key, by an exchange.
    if (subject.cnfJkt !== undefined) {
      if (!proof) throw oauthError("dpop_required", "the subject token is DPoP-bound: send a DPoP proof signed by its key");
      if (proof.jkt !== subject.cnfJkt) {
        throw oauthError("dpop_proof_invalid", "the DPoP proof is not signed by the key the subject token is bound to (cnf.jkt)", { internal: `proof jkt ${proof.jkt}, subject cnf.jkt ${subject.cnfJkt}` });
      }
    }

    const grant = decideDelegation(
      await this.d.delegations.candidatesFor(client.clientId, subject.issuer, subject.subject),
      {
        actor: client.clientId,
        actorAttestor: client.attestor,
        subject: { issuer: subject.issuer, subject: subject.subject, scope: subject.scope, mayAct: subject.mayAct, actDepth: subject.actDepth, expiresAt: subject.expiresAt },
        requestedScope: req.scope,
        requestedAudiences: [...req.audience, ...req.resource],
        requestedTtlSeconds: req.requestedTtlSeconds,
        dpopPresented: proof !== undefined,
        trustDomainId: this.d.trustDomain.idString,
        ownIssuer: this.d.issuer(),
      },
      { maxActDepth: this.d.maxActDepth, defaultTtlSeconds: this.d.accessTokenTtlSeconds, dpopRequiredByConfig: this.d.dpopRequired, now },
    );

    const issued = await this.d.tokens.issue({
      client,
      subject: subject.subject,
      subjectIssuer: subject.issuer,
      audience: grant.audience,
      scope: grant.scope,
      delegationId: grant.delegationId,
      parentJti,
      priorAct: subject.act === undefined ? undefined : actChain(subject.act),
      jkt: proof?.jkt,
      expiresAt: grant.expiresAt,
      now,
      auditDetails: { requested: rec.asked, reason: grant.reason ?? null, subject_token_sha256: rec.subjectTokenDigest ?? null, subject_origin: subject.origin, client_auth: client.method },
    });
    return {
      access_token: issued.token,
      issued_token_type: req.requestedTokenType,
      token_type: tokenType(proof),
      expires_in: Math.max(0, Math.floor((issued.expiresAt.getTime() - now.getTime()) / 1000)),
      scope: grant.scope.join(" "),
      log_index: issued.logIndex,
    };
  }

  /** The actor token (RFC 8693 §2.1) is the agent's own JWT-SVID, and the agent is the client. */
  private async checkActor(actorToken: string, client: AuthenticatedClient, now: Date): Promise<void> {
    let actor: VerifiedSubjectToken;
    try {
      actor = await this.d.subjects.verify(actorToken, TOKEN_TYPE.jwt, now);
    } catch (e) {
      if (!isHallmarkError(e)) throw e;
      throw oauthError("actor_token_invalid", "the actor token is not a valid JWT-SVID of this trust domain for this server", { internal: `${e.code}: ${e.message}` });
    }
    if (actor.origin !== "hallmark-jwt-svid") throw oauthError("actor_token_invalid", "the actor token must be a JWT-SVID of this trust domain", { internal: `origin ${actor.origin}` });
    if (actor.subject !== client.clientId) {
      throw oauthError("actor_not_client", "the actor token's subject is not the authenticated client", { internal: `actor ${actor.subject}, client ${client.clientId}` });
    }
  }

  private async auditRefusal(e: unknown, now: Date, rec: ExchangeRecord): Promise<void> {
    const refused = isHallmarkError(e);
    await this.d.audit.append({
      time: now,
      event: AUDIT_EVENTS.issueAccessToken,
      outcome: refused ? "refused" : "error",
      code: refused ? e.code : "internal",
      actor: rec.client?.clientId ?? "unauthenticated",
      ...(rec.client ? { spiffeId: rec.client.clientId, attestor: rec.client.attestor } : {}),
      details: {
        reason: refused ? e.message : "internal error",
        internal: refused ? (e.internal ?? null) : String((e as Error)?.message ?? e).slice(0, 512),
        subject: rec.subject?.subject ?? null,
        subject_issuer: rec.subject?.issuer ?? null,
        requested: rec.asked ?? null,
        subject_token_sha256: rec.subjectTokenDigest ?? null,
      },
    });
  }
}

const tokenType = (proof: VerifiedDpopProof | undefined): "DPoP" | "Bearer" => (proof ? "DPoP" : "Bearer");

/** What was asked, for the audit record: never the tokens themselves. */
function askedFor(req: TokenExchangeRequest, dpop: boolean): Record<string, unknown> {
  return {
    scope: req.scope.join(" "),
    audience: req.audience,
    resource: req.resource,
    expires_in: req.requestedTtlSeconds ?? null,
    subject_token_type: req.subjectTokenType,
    requested_token_type: req.requestedTokenType,
    actor_token: req.actorToken !== undefined,
    dpop,
  };
}

/** The subject token's chain, level by level as sub, iss and the next act only: nothing else a token carried travels on. */
function actChain(act: { sub: string; iss?: string | undefined; act?: unknown }): ActClaim {
  const next = act.act as typeof act | undefined;
  return { sub: act.sub, ...(act.iss === undefined ? {} : { iss: act.iss }), ...(next === undefined ? {} : { act: actChain(next) }) };
}
