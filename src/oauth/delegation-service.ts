import { randomUUID } from "node:crypto";
import type { AuditLog } from "../audit/log.js";
import { HallmarkError } from "../errors.js";
import { AUDIT_EVENTS } from "../service/audit-events.js";
import type { Clock } from "../service/clock.js";
import type { DelegationLookup } from "../service/ports.js";
import { HALLMARK_NAMESPACE, SpiffeId, inHallmarkNamespace, parseMemberId, type TrustDomain } from "../spiffe/id.js";
import type { DelegationRecord, Store } from "../store/types.js";
import { oauthError } from "./errors.js";
import { isScopeToken } from "./scope.js";

export interface DelegationServiceDeps {
  trustDomain: TrustDomain;
  store: Pick<Store, "delegations">;
  audit: AuditLog;
  clock: Clock;
  /** The longest max lifetime a delegation may give (svid.maxTtl). */
  maxTtlCeilingSeconds: number;
  /** The attestor types Hallmark knows (src/attestors/registry.ts): what requireAttestor may name. */
  attestorTypes: readonly string[];
}

export interface NewDelegation {
  actor: string;
  subjectIssuer: string;
  subject?: string | undefined;
  scopes: string[];
  audiences: string[];
  maxTtlSeconds: number;
  requireDpop?: boolean | undefined;
  requireAttestor?: string | undefined;
}

/** Bounds of one delegation: enough for any real policy, small enough that a lookup stays cheap. */
export const DELEGATION_LIMITS = { scopes: 64, audiences: 16, audienceLength: 512, subjectLength: 1024, issuerLength: 512 } as const;

// Printable, no whitespace: an audience is an absolute URI or a logical name, compared as a string.
const AUDIENCE = /^[\x21-\x7e]+$/;
// A `sub` is any string (RFC 7519 §4.1.2) up to the limit; control characters never belong in one.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

/**
 * Who may act for whom: the delegations behind token exchange. Administration (create, list,
 * show, delete: each change audited) and the lookup the token endpoint makes. No HTTP here.
 */
export class DelegationService implements DelegationLookup {
  constructor(private readonly deps: DelegationServiceDeps) {}

  async create(input: NewDelegation): Promise<DelegationRecord> {
    const record: DelegationRecord = {
      id: randomUUID(),
      actor: this.actorId(input.actor),
      subjectIssuer: issuerUrl(input.subjectIssuer),
      subject: input.subject === undefined ? undefined : subjectOf(input.subject),
      scopes: scopesOf(input.scopes),
      audiences: audiencesOf(input.audiences),
      maxTtlSeconds: this.maxTtl(input.maxTtlSeconds),
      requireDpop: input.requireDpop ?? false,
      requireAttestor: input.requireAttestor === undefined ? undefined : this.attestorType(input.requireAttestor),
      createdAt: this.deps.clock(),
    };
    await this.deps.store.delegations.create(record);
    await this.audit(AUDIT_EVENTS.delegationCreate, record);
    return record;
  }

  list(filter: { actor?: string } = {}): Promise<DelegationRecord[]> {
    return this.deps.store.delegations.list(filter.actor === undefined ? {} : { actor: SpiffeId.parse(filter.actor).toString() });
  }

  async get(id: string): Promise<DelegationRecord> {
    const d = await this.deps.store.delegations.get(id);
    if (!d) throw oauthError("delegation_not_found", "no such delegation");
    return d;
  }

  async delete(id: string): Promise<void> {
    const d = await this.get(id);
    if (!(await this.deps.store.delegations.delete(id))) throw oauthError("delegation_not_found", "no such delegation");
    await this.audit(AUDIT_EVENTS.delegationDelete, d);
  }

  /** Whether the delegation still exists: every access token issued under it is active only while it does. */
  async exists(id: string): Promise<boolean> {
    return (await this.deps.store.delegations.get(id)) !== undefined;
  }

  /** The delegations that could let `actor` act for `subject` of `subjectIssuer`: decideDelegation's candidates. */
  candidatesFor(actor: string, subjectIssuer: string, subject: string): Promise<DelegationRecord[]> {
    return this.deps.store.delegations.findFor(actor, subjectIssuer, subject);
  }

  /** An agent of this trust domain; never Hallmark's own namespace, whose IDs only the server and nodes hold. */
  private actorId(input: string): string {
    const id = parseMemberId(input, this.deps.trustDomain);
    if (inHallmarkNamespace(id)) throw new HallmarkError("spiffe_id_reserved", `${id} is in ${HALLMARK_NAMESPACE}/, which only the server assigns`);
    return id.toString();
  }

  private maxTtl(s: number): number {
    const ceiling = this.deps.maxTtlCeilingSeconds;
    if (!Number.isSafeInteger(s) || s <= 0 || s > ceiling) throw new HallmarkError("ttl_invalid", `the max TTL must be between 1 s and ${ceiling} s (svid.maxTtl)`);
    return s;
  }

  private attestorType(t: string): string {
    if (!this.deps.attestorTypes.includes(t)) {
      throw new HallmarkError("unknown_attestor", `unknown attestor ${JSON.stringify(t.slice(0, 40))} (one of: ${this.deps.attestorTypes.join(", ")})`);
    }
    return t;
  }

  private async audit(event: string, d: DelegationRecord): Promise<void> {
    await this.deps.audit.append({
      time: this.deps.clock(),
      event,
      outcome: "success",
      actor: "admin:socket",
      spiffeId: d.actor,
      details: {
        delegationId: d.id,
        subjectIssuer: d.subjectIssuer,
        subject: d.subject ?? null,
        scopes: d.scopes,
        audiences: d.audiences,
        maxTtlSeconds: d.maxTtlSeconds,
        requireDpop: d.requireDpop,
        requireAttestor: d.requireAttestor ?? null,
      },
    });
  }
}

const invalid = (why: string) => oauthError("delegation_invalid", why);

/** An issuer identifier as OIDC writes one: http(s), no userinfo, query or fragment; compared verbatim with `iss`. */
function issuerUrl(input: string): string {
  let u: URL;
  try {
    u = new URL(input);
  } catch {
    throw invalid("the subject issuer must be an http(s) URL");
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") throw invalid("the subject issuer must be an http(s) URL");
  if (u.username || u.password || u.search || u.hash || input.includes("#") || input.includes("?")) {
    throw invalid("the subject issuer must have no userinfo, query or fragment");
  }
  if (input.length > DELEGATION_LIMITS.issuerLength) throw invalid(`the subject issuer is longer than ${DELEGATION_LIMITS.issuerLength} characters`);
  // Kept as given: tokens are matched on `iss` character for character (OIDC Discovery §4.3).
  return input;
}

function subjectOf(s: string): string {
  if (s.length === 0 || s.length > DELEGATION_LIMITS.subjectLength || CONTROL.test(s)) {
    throw invalid(`the subject must be 1 to ${DELEGATION_LIMITS.subjectLength} characters without control characters`);
  }
  return s;
}

function scopesOf(scopes: string[]): string[] {
  const unique = [...new Set(scopes)];
  if (unique.length === 0 || unique.length > DELEGATION_LIMITS.scopes) throw invalid(`give 1 to ${DELEGATION_LIMITS.scopes} scopes`);
  const bad = unique.find((s) => !isScopeToken(s));
  if (bad !== undefined) throw invalid(`scope ${JSON.stringify(bad.slice(0, 80))} is not an RFC 6749 scope token (printable ASCII, no space, quote or backslash)`);
  return unique;
}

function audiencesOf(audiences: string[]): string[] {
  const unique = [...new Set(audiences)];
  if (unique.length === 0 || unique.length > DELEGATION_LIMITS.audiences) throw invalid(`give 1 to ${DELEGATION_LIMITS.audiences} audiences`);
  const bad = unique.find((a) => a.length > DELEGATION_LIMITS.audienceLength || !AUDIENCE.test(a));
  if (bad !== undefined) throw invalid(`audience ${JSON.stringify(bad.slice(0, 80))} must be printable ASCII without spaces, at most ${DELEGATION_LIMITS.audienceLength} characters`);
  return unique;
}
