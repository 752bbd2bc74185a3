import type { HallmarkError } from "../errors.js";
import type { DelegationRecord } from "../store/types.js";
import { oauthError } from "./errors.js";

/**
 * The delegation decision of a token exchange (RFC 8693): may this actor act for this subject,
 * and with what scope, audience, lifetime and binding. Pure: the caller has verified the subject
 * and actor tokens and authenticated the client, and hands in what they established together with
 * the candidate delegations (DelegationRepository.findFor); nothing here reads a clock or a store.
 *
 * Order of the checks, each refusal with its stable code:
 * 1. The subject token's own `may_act` (RFC 8693 §4.4), whenever the token carries one, whether or
 *    not an actor token was sent, and on top of the policy: its `sub` must be the actor, its `iss`
 *    (if any) Hallmark's issuer or the trust domain (`spiffe://<td>`).       -> may_act_refused
 * 2. The chain depth: the new token nests one more `act`.                   -> act_too_deep
 * 3. The subject token must leave a second to live.                         -> subject_token_expired
 * 4. The delegations that name this actor, issuer and subject (or any subject of the issuer);
 *    none                                                                   -> delegation_denied
 * 5. Each candidate in turn: the actor's attestor                          -> delegation_attestation_insufficient
 *    audiences (every requested one allowed; none requested: the delegation's only one)
 *                                                                           -> audience_not_allowed
 *    scope (request ⊆ subject token scope ∩ delegation scopes; no request: that intersection,
 *    which must not be empty)                                               -> scope_not_allowed
 *    lifetime (requested ≤ the delegation's max)                            -> ttl_not_allowed
 *    DPoP (the delegation or the configuration requires a proof)            -> dpop_required
 *
 * Several candidates: they are ranked narrowest first (NARROWEST_FIRST below) and the first one
 * that allows the request wins, so among delegations that fit the caller gets the least. When none
 * allows it, the refusal is that of the candidate that passed the most checks (ties: the narrowest),
 * which tells the caller what to change. Every decision explains itself: a grant carries `reason`
 * and what each candidate said; a refusal's `internal` (for the audit record, not the caller) says
 * what every candidate said.
 */

export interface DelegationRequest {
  /** The authenticated client's SPIFFE ID (the server has checked that it equals the actor token's `sub`). */
  actor: string;
  /** The attestor type of the actor's node; undefined when unknown. */
  actorAttestor: string | undefined;
  subject: {
    issuer: string;
    subject: string;
    /** The subject token's `scope`; undefined when it has no scope claim: then the delegation alone bounds the scope. */
    scope?: string[] | undefined;
    mayAct?: { sub?: string | undefined; iss?: string | undefined } | undefined;
    /** How many `act` claims the subject token nests already (0 for a person's own token). */
    actDepth: number;
    expiresAt: Date;
  };
  /** Scope tokens asked for; undefined or empty = everything allowed. */
  requestedScope?: string[] | undefined;
  /** From `audience` and `resource`; empty = the delegation's only audience if it has exactly one, else refused. */
  requestedAudiences: string[];
  requestedTtlSeconds?: number | undefined;
  dpopPresented: boolean;
  /** The trust domain's SPIFFE ID (`spiffe://<td>`, TrustDomain.idString): a `may_act.iss` naming it names this server. */
  trustDomainId: string;
  /** Hallmark's issuer URL (delegation.issuer): a `may_act.iss` equal to it names Hallmark. */
  ownIssuer: string;
}

export interface DelegationPolicyOptions {
  maxActDepth: number;
  /** Lifetime when the request names none (delegation.accessTokenTtl). */
  defaultTtlSeconds: number;
  /** delegation.dpop.required */
  dpopRequiredByConfig: boolean;
  now: Date;
}

/** What one candidate delegation said about the request. */
export interface CandidateVerdict {
  delegationId: string;
  /** "granted", or the refusal code. */
  outcome: "granted" | DelegationRefusalCode;
  why: string;
}

export interface DelegationGrant {
  delegationId: string;
  scope: string[];
  audience: string[];
  /** Whole seconds (a JWT `exp` cannot say more), never after the subject token's. */
  expiresAt: Date;
  /** The delegation or the configuration requires a DPoP-bound token. */
  dpopRequired: boolean;
  /** One line for the audit record: the delegation chosen and what bounded the grant. */
  reason?: string;
  /** What each candidate said, in rank order. */
  considered?: CandidateVerdict[];
}

/** The refusals one candidate can give, in the order they are checked. */
const CANDIDATE_CHECKS = ["delegation_attestation_insufficient", "audience_not_allowed", "scope_not_allowed", "ttl_not_allowed", "dpop_required"] as const;
export type DelegationRefusalCode = (typeof CANDIDATE_CHECKS)[number];

export function decideDelegation(candidates: DelegationRecord[], req: DelegationRequest, o: DelegationPolicyOptions): DelegationGrant {
  checkMayAct(req);
  // A depth that is not a count is a caller's bug: refused, never read as "shallow enough" (NaN + 1 > n is false).
  if (!Number.isSafeInteger(req.subject.actDepth) || req.subject.actDepth < 0) {
    throw oauthError("act_too_deep", "the subject token's act nesting could not be counted", { internal: `actDepth=${String(req.subject.actDepth)}` });
  }
  if (req.subject.actDepth + 1 > o.maxActDepth) {
    throw oauthError("act_too_deep", `the subject token already nests ${req.subject.actDepth} act claims; at most ${o.maxActDepth} are allowed`);
  }
  // exp is whole seconds, rounded down: a token ending in this second would be born expired.
  if (Math.floor(req.subject.expiresAt.getTime() / 1000) * 1000 <= o.now.getTime()) {
    throw oauthError("subject_token_expired", "the subject token expires too soon to grant anything");
  }
  const applicable = candidates.filter((d) => covers(d, req)).sort(NARROWEST_FIRST);
  if (applicable.length === 0) {
    throw oauthError("delegation_denied", `no delegation lets ${req.actor} act for subjects of ${req.subject.issuer}`, {
      internal: `actor=${req.actor} issuer=${req.subject.issuer} sub=${req.subject.subject}; ${candidates.length} candidate(s) handed in, none covers`,
    });
  }
  const verdicts = applicable.map((d) => ({ d, v: judge(d, req, o) }));
  const considered = verdicts.map(({ d, v }): CandidateVerdict => ({ delegationId: d.id, outcome: v.ok ? "granted" : v.code, why: v.ok ? v.grant.reason ?? "" : v.why }));
  const chosen = verdicts.find((x) => x.v.ok);
  if (chosen?.v.ok) return { ...chosen.v.grant, considered };
  // None allows it: the candidate that got furthest says why (the first of those: the narrowest).
  let best: Refusal | undefined;
  for (const { v } of verdicts) if (!v.ok && (!best || stage(v.code) > stage(best.code))) best = v;
  const explain = considered.map((c) => `${c.delegationId}: ${c.outcome} (${c.why})`).join("; ");
  throw refusalError(best!, explain);
}

/** A `may_act` names who may act for the subject (RFC 8693 §4.4): anyone else is refused, policy or not. */
function checkMayAct(req: DelegationRequest): void {
  const m = req.subject.mayAct;
  if (m === undefined) return;
  if (m.sub !== req.actor) {
    throw oauthError("may_act_refused", m.sub === undefined ? "the subject token's may_act names no actor" : "the subject token's may_act names another actor", {
      internal: `may_act.sub=${m.sub ?? "-"} actor=${req.actor}`,
    });
  }
  if (m.iss !== undefined && !mayActIssuers(req).includes(m.iss)) {
    throw oauthError("may_act_refused", "the subject token's may_act names an actor of another issuer", { internal: `may_act.iss=${m.iss}` });
  }
}

/** The ways a `may_act.iss` can name this server: its issuer URL or its trust domain. */
function mayActIssuers(req: DelegationRequest): string[] {
  return [req.ownIssuer, req.trustDomainId];
}

/** The store already selects these; checked again so a wrong list can only narrow, never widen. */
function covers(d: DelegationRecord, req: DelegationRequest): boolean {
  return d.actor === req.actor && d.subjectIssuer === req.subject.issuer && (d.subject === undefined || d.subject === req.subject.subject);
}

/**
 * Narrowest first: a delegation for this one person before one for anyone of the issuer; one
 * that demands hardware attestation or DPoP before one that does not; fewer scopes, fewer
 * audiences, shorter max lifetime; then the oldest, then by id, so the order is total.
 */
const NARROWEST_FIRST = (a: DelegationRecord, b: DelegationRecord): number =>
  Number(a.subject === undefined) - Number(b.subject === undefined) ||
  Number(a.requireAttestor === undefined) - Number(b.requireAttestor === undefined) ||
  Number(!a.requireDpop) - Number(!b.requireDpop) ||
  a.scopes.length - b.scopes.length ||
  a.audiences.length - b.audiences.length ||
  a.maxTtlSeconds - b.maxTtlSeconds ||
  a.createdAt.getTime() - b.createdAt.getTime() ||
  (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

interface Refusal {
  ok: false;
  code: DelegationRefusalCode;
  why: string;
}
type Verdict = { ok: true; grant: DelegationGrant } | Refusal;

const stage = (code: DelegationRefusalCode): number => CANDIDATE_CHECKS.indexOf(code);
const refuse = (code: DelegationRefusalCode, why: string): Refusal => ({ ok: false, code, why });
const unique = (xs: readonly string[]): string[] => [...new Set(xs)];
const quoted = (xs: readonly string[]): string => xs.map((x) => `'${x}'`).join(", ");

function refusalError(r: Refusal, internal: string): HallmarkError {
  return oauthError(r.code, r.why, { internal });
}

/** One candidate against the request: a grant, or the first check it fails. */
function judge(d: DelegationRecord, req: DelegationRequest, o: DelegationPolicyOptions): Verdict {
  if (d.requireAttestor !== undefined && req.actorAttestor !== d.requireAttestor) {
    return refuse("delegation_attestation_insufficient", `the delegation requires the actor's node to be attested by ${d.requireAttestor}, it was by ${req.actorAttestor ?? "none known"}`);
  }

  const askedAudiences = unique(req.requestedAudiences);
  let audience: string[];
  if (askedAudiences.length === 0) {
    if (d.audiences.length !== 1) return refuse("audience_not_allowed", `name an audience or resource: the delegation allows ${d.audiences.length}`);
    audience = [d.audiences[0]!];
  } else {
    const outside = askedAudiences.filter((a) => !d.audiences.includes(a));
    if (outside.length > 0) return refuse("audience_not_allowed", `audience ${quoted(outside)} is not one the delegation allows`);
    audience = askedAudiences;
  }

  // The most this exchange may carry: the delegation's scopes that the subject token also holds.
  const subjectScope = req.subject.scope;
  const allowed = subjectScope === undefined ? unique(d.scopes) : unique(d.scopes).filter((s) => subjectScope.includes(s));
  const askedScope = unique(req.requestedScope ?? []);
  let scope: string[];
  if (askedScope.length === 0) {
    if (allowed.length === 0) return refuse("scope_not_allowed", "the subject token and the delegation have no scope in common");
    scope = allowed;
  } else {
    const excess = askedScope.filter((s) => !allowed.includes(s));
    if (excess.length > 0) return refuse("scope_not_allowed", `scope ${quoted(excess)} exceeds what the subject token and the delegation allow`);
    scope = askedScope;
  }

  const asked = req.requestedTtlSeconds;
  if (asked !== undefined && !(Number.isSafeInteger(asked) && asked > 0 && asked <= d.maxTtlSeconds)) {
    return refuse("ttl_not_allowed", `a lifetime of ${asked} s is not allowed: at most ${d.maxTtlSeconds} s`);
  }

  const dpopRequired = o.dpopRequiredByConfig || d.requireDpop;
  if (dpopRequired && !req.dpopPresented) {
    return refuse("dpop_required", o.dpopRequiredByConfig ? "this server requires a DPoP proof" : "the delegation requires a DPoP proof");
  }

  // exp = the earliest of: the lifetime asked for (or the default), the delegation's max, the
  // subject token's exp; in whole seconds, rounded down, so the JWT's exp never passes any of them.
  const now = o.now.getTime();
  const bounds: Array<[string, number]> = [
    [asked !== undefined ? "requested lifetime" : "default lifetime", now + (asked ?? o.defaultTtlSeconds) * 1000],
    ["delegation max lifetime", now + d.maxTtlSeconds * 1000],
    ["subject token exp", req.subject.expiresAt.getTime()],
  ];
  const [boundBy, until] = bounds.reduce((a, b) => (b[1] < a[1] ? b : a));
  const expiresAt = new Date(Math.floor(until / 1000) * 1000);
  return {
    ok: true,
    grant: {
      delegationId: d.id,
      scope,
      audience,
      expiresAt,
      dpopRequired,
      reason:
        `delegation ${d.id} (${d.subject === undefined ? "any subject" : "this subject"} of ${d.subjectIssuer}): ` +
        `scope ${scope.join(" ")}; audience ${audience.join(" ")}; expires ${expiresAt.toISOString()} (bounded by the ${boundBy})` +
        `${dpopRequired ? "; DPoP required" : ""}`,
    },
  };
}
