import { describe, expect, it } from "vitest";
import { type DelegationRequest, decideDelegation } from "../../src/oauth/delegation-policy.js";
import { OAUTH_ERROR_OF } from "../../src/oauth/errors.js";
import type { DelegationRecord } from "../../src/store/types.js";

/**
 * The delegation decision of a token exchange (issue 11), every refusal code and every narrowing.
 * The function is pure: the clock is a fixed date, the candidates are records as the store returns them.
 */

const now = new Date("2026-03-01T12:00:00Z");
const at = (s: number) => new Date(now.getTime() + s * 1000);
const AGENT = "spiffe://example.org/agent/code-reviewer";
const IDP = "https://idp.example.com";
const OWN = "https://hallmark.example.org";
const API = "https://api.github.example";

const delegation = (over: Partial<DelegationRecord> = {}): DelegationRecord => ({
  id: "d-wide",
  actor: AGENT,
  subjectIssuer: IDP,
  scopes: ["repo:read", "issues:write", "repo:write"],
  audiences: [API],
  maxTtlSeconds: 600,
  requireDpop: false,
  createdAt: new Date("2026-01-01T00:00:00Z"),
  ...over,
});

const request = (over: Partial<DelegationRequest> = {}, subject: Partial<DelegationRequest["subject"]> = {}): DelegationRequest => ({
  actor: AGENT,
  actorAttestor: "tpm",
  subject: { issuer: IDP, subject: "alice", scope: ["repo:read", "issues:write", "repo:write", "admin"], actDepth: 0, expiresAt: at(3600), ...subject },
  requestedAudiences: [],
  dpopPresented: true,
  trustDomainId: "spiffe://example.org",
  ownIssuer: OWN,
  ...over,
});

const options = (over: Partial<Parameters<typeof decideDelegation>[2]> = {}) => ({ maxActDepth: 4, defaultTtlSeconds: 300, dpopRequiredByConfig: true, now, ...over });

/** The refusal's code (and that it is one the OAuth endpoints can answer). */
function refusal(f: () => unknown): { code: string; message: string; internal: string | undefined } {
  try {
    f();
  } catch (e) {
    const err = e as { code: string; message: string; internal?: string };
    expect(OAUTH_ERROR_OF).toHaveProperty(err.code);
    return { code: err.code, message: err.message, internal: err.internal };
  }
  throw new Error("expected a refusal, got a grant");
}

describe("narrowing", () => {
  it("grants the intersection of the subject token's scope and the delegation's when no scope is asked for", () => {
    const g = decideDelegation([delegation()], request({}, { scope: ["repo:read", "admin"] }), options());
    expect(g.scope).toEqual(["repo:read"]);
    expect(g.audience).toEqual([API]);
    expect(g.delegationId).toBe("d-wide");
    expect(g.dpopRequired).toBe(true);
  });

  it("grants exactly the scope asked for when it is within both, and refuses one token beyond either", () => {
    expect(decideDelegation([delegation()], request({ requestedScope: ["issues:write"] }), options()).scope).toEqual(["issues:write"]);
    // In the subject token but not in the delegation: escalation through the policy.
    const beyondPolicy = refusal(() => decideDelegation([delegation()], request({ requestedScope: ["repo:read", "admin"] }), options()));
    expect(beyondPolicy.code).toBe("scope_not_allowed");
    expect(beyondPolicy.message).toContain("'admin'");
    // In the delegation but not in the subject token: escalation beyond what the person holds.
    expect(refusal(() => decideDelegation([delegation()], request({ requestedScope: ["repo:write"] }, { scope: ["repo:read"] }), options())).code).toBe("scope_not_allowed");
  });

  it("refuses when the subject token and the delegation share no scope", () => {
    expect(refusal(() => decideDelegation([delegation()], request({}, { scope: ["admin"] }), options())).code).toBe("scope_not_allowed");
  });

  it("lets the delegation alone bound the scope of a subject token without a scope claim", () => {
    expect(decideDelegation([delegation()], request({}, { scope: undefined }), options()).scope).toEqual(["repo:read", "issues:write", "repo:write"]);
  });

  it("takes the delegation's only audience when none is asked for, and refuses to guess among several", () => {
    const two = delegation({ audiences: [API, "billing"] });
    const r = refusal(() => decideDelegation([two], request(), options()));
    expect(r.code).toBe("audience_not_allowed");
    expect(OAUTH_ERROR_OF.audience_not_allowed).toBe("invalid_target");
    expect(decideDelegation([two], request({ requestedAudiences: ["billing", "billing"] }), options()).audience).toEqual(["billing"]);
    expect(decideDelegation([two], request({ requestedAudiences: [API, "billing"] }), options()).audience).toEqual([API, "billing"]);
  });

  it("refuses an audience the delegation does not name, even beside one it does", () => {
    const r = refusal(() => decideDelegation([delegation()], request({ requestedAudiences: [API, "https://evil.example"] }), options()));
    expect(r.code).toBe("audience_not_allowed");
    expect(r.message).toContain("https://evil.example");
  });

  it("ends the grant at the earliest of: the lifetime asked for or the default, the delegation's max, the subject token's exp", () => {
    const d = delegation({ maxTtlSeconds: 600 });
    // The default (300 s) is the earliest.
    const byDefault = decideDelegation([d], request(), options());
    expect(byDefault.expiresAt).toEqual(at(300));
    expect(byDefault.reason).toContain("default lifetime");
    // The request (120 s) is the earliest.
    expect(decideDelegation([d], request({ requestedTtlSeconds: 120 }), options()).expiresAt).toEqual(at(120));
    // The delegation's max (600 s) is earlier than the default (900 s).
    const byPolicy = decideDelegation([d], request(), options({ defaultTtlSeconds: 900 }));
    expect(byPolicy.expiresAt).toEqual(at(600));
    expect(byPolicy.reason).toContain("delegation max lifetime");
    // The subject token's exp (45.5 s from now) is the earliest, rounded down to whole seconds.
    const bySubject = decideDelegation([d], request({ requestedTtlSeconds: 600 }, { expiresAt: new Date(at(45).getTime() + 500) }), options());
    expect(bySubject.expiresAt).toEqual(at(45));
    expect(bySubject.reason).toContain("subject token exp");
  });

  it("refuses a lifetime beyond the delegation's max (ttl_not_allowed), and one that is not a positive whole number", () => {
    expect(refusal(() => decideDelegation([delegation({ maxTtlSeconds: 600 })], request({ requestedTtlSeconds: 601 }), options())).code).toBe("ttl_not_allowed");
    expect(refusal(() => decideDelegation([delegation()], request({ requestedTtlSeconds: 0 }), options())).code).toBe("ttl_not_allowed");
    expect(refusal(() => decideDelegation([delegation()], request({ requestedTtlSeconds: 1.5 }), options())).code).toBe("ttl_not_allowed");
  });

  it("refuses a subject token that leaves less than a second to live", () => {
    expect(refusal(() => decideDelegation([delegation()], request({}, { expiresAt: new Date(now.getTime() + 400) }), options())).code).toBe("subject_token_expired");
  });
});

describe("who may act", () => {
  it("refuses when no delegation names this actor, issuer and subject (delegation_denied)", () => {
    expect(refusal(() => decideDelegation([], request(), options())).code).toBe("delegation_denied");
    // Handed in by mistake, delegations of another actor, issuer or person never count.
    const others = [delegation({ actor: "spiffe://example.org/agent/other" }), delegation({ subjectIssuer: "https://other-idp.example" }), delegation({ subject: "bob" })];
    const r = refusal(() => decideDelegation(others, request(), options()));
    expect(r.code).toBe("delegation_denied");
    expect(OAUTH_ERROR_OF.delegation_denied).toBe("unauthorized_client");
  });

  it("applies a delegation for one person to that person only, and a delegation without subject to anyone of the issuer", () => {
    expect(decideDelegation([delegation({ subject: "alice" })], request(), options()).delegationId).toBe("d-wide");
    expect(decideDelegation([delegation()], request({}, { subject: "bob" }), options()).delegationId).toBe("d-wide");
  });

  it("refuses an actor whose node attested with another attestor than the delegation requires", () => {
    const d = delegation({ requireAttestor: "tpm" });
    expect(decideDelegation([d], request({ actorAttestor: "tpm" }), options()).delegationId).toBe("d-wide");
    expect(refusal(() => decideDelegation([d], request({ actorAttestor: "join_token" }), options())).code).toBe("delegation_attestation_insufficient");
    expect(refusal(() => decideDelegation([d], request({ actorAttestor: undefined }), options())).code).toBe("delegation_attestation_insufficient");
  });

  it("requires a DPoP proof when the configuration or the delegation says so, and only then", () => {
    const plain = delegation();
    const strict = delegation({ requireDpop: true });
    expect(refusal(() => decideDelegation([plain], request({ dpopPresented: false }), options())).code).toBe("dpop_required");
    expect(refusal(() => decideDelegation([strict], request({ dpopPresented: false }), options({ dpopRequiredByConfig: false }))).code).toBe("dpop_required");
    const bearer = decideDelegation([plain], request({ dpopPresented: false }), options({ dpopRequiredByConfig: false }));
    expect(bearer.dpopRequired).toBe(false);
    expect(decideDelegation([strict], request({ dpopPresented: true }), options({ dpopRequiredByConfig: false })).dpopRequired).toBe(true);
  });
});

describe("may_act (RFC 8693 §4.4), enforced on top of the policy whether or not an actor token was sent", () => {
  it("accepts a may_act naming this actor, with Hallmark's issuer or the trust domain as iss, or no iss", () => {
    for (const iss of [undefined, OWN, "spiffe://example.org"]) {
      expect(decideDelegation([delegation()], request({}, { mayAct: { sub: AGENT, iss } }), options()).delegationId).toBe("d-wide");
    }
    // The bare trust domain name is not how may_act names an issuer: only its SPIFFE ID form is.
    expect(() => decideDelegation([delegation()], request({}, { mayAct: { sub: AGENT, iss: "example.org" } }), options())).toThrowError(expect.objectContaining({ code: "may_act_refused" }));
  });

  it("refuses a may_act naming another actor, no actor, or an actor of another issuer", () => {
    for (const mayAct of [{ sub: "spiffe://example.org/agent/other" }, {}, { sub: AGENT, iss: "https://idp.example.com" }, { sub: AGENT, iss: "spiffe://other.org" }]) {
      const r = refusal(() => decideDelegation([delegation()], request({}, { mayAct }), options()));
      expect(r.code, JSON.stringify(mayAct)).toBe("may_act_refused");
    }
  });

  it("refuses a may_act for another actor even when a delegation allows this one (the claim is not overridden by policy)", () => {
    const r = refusal(() => decideDelegation([delegation()], request({}, { mayAct: { sub: "spiffe://example.org/agent/other" } }), options()));
    expect(r.code).toBe("may_act_refused");
    expect(r.internal).toContain("spiffe://example.org/agent/other");
  });

  it("refuses a may_act for another actor before saying that no delegation exists", () => {
    expect(refusal(() => decideDelegation([], request({}, { mayAct: { sub: "spiffe://example.org/agent/other" } }), options())).code).toBe("may_act_refused");
  });
});

describe("act depth", () => {
  it("allows nesting up to maxActDepth and refuses one more", () => {
    expect(decideDelegation([delegation()], request({}, { actDepth: 3 }), options({ maxActDepth: 4 })).delegationId).toBe("d-wide");
    expect(refusal(() => decideDelegation([delegation()], request({}, { actDepth: 4 }), options({ maxActDepth: 4 }))).code).toBe("act_too_deep");
    expect(refusal(() => decideDelegation([delegation()], request(), options({ maxActDepth: 0 }))).code).toBe("act_too_deep");
    // A depth the caller failed to count is refused, not taken as shallow.
    for (const actDepth of [Number.NaN, -1, 1.5]) {
      expect(refusal(() => decideDelegation([delegation()], request({}, { actDepth }), options())).code).toBe("act_too_deep");
    }
  });
});

describe("several delegations", () => {
  const forAlice = delegation({ id: "d-alice", subject: "alice", scopes: ["repo:read", "issues:write", "repo:write"] });
  const narrow = delegation({ id: "d-narrow", scopes: ["repo:read"] });
  const wide = delegation({ id: "d-wide" });

  it("chooses the narrowest that allows the request, whatever order they come in", () => {
    for (const list of [[wide, narrow], [narrow, wide]]) {
      const g = decideDelegation(list, request(), options());
      expect(g.delegationId).toBe("d-narrow");
      expect(g.scope).toEqual(["repo:read"]);
      expect(g.considered?.map((c) => c.delegationId)).toEqual(["d-narrow", "d-wide"]);
    }
    // Only the wider one allows repo:write: it is chosen, and the narrower one says why not.
    const g = decideDelegation([narrow, wide], request({ requestedScope: ["repo:write"] }), options());
    expect(g.delegationId).toBe("d-wide");
    expect(g.considered).toEqual([
      { delegationId: "d-narrow", outcome: "scope_not_allowed", why: expect.stringContaining("repo:write") as string },
      { delegationId: "d-wide", outcome: "granted", why: expect.stringContaining("d-wide") as string },
    ]);
  });

  it("prefers a delegation for this person over one for anyone of the issuer", () => {
    expect(decideDelegation([narrow, forAlice], request(), options()).delegationId).toBe("d-alice");
    expect(decideDelegation([narrow, forAlice], request({}, { subject: "bob" }), options()).delegationId).toBe("d-narrow");
  });

  it("breaks full ties by age, then by id", () => {
    const older = delegation({ id: "d-b", createdAt: new Date("2025-01-01T00:00:00Z") });
    const newer = delegation({ id: "d-a", createdAt: new Date("2026-02-01T00:00:00Z") });
    expect(decideDelegation([newer, older], request(), options()).delegationId).toBe("d-b");
    const twinA = delegation({ id: "d-a" });
    const twinB = delegation({ id: "d-b" });
    expect(decideDelegation([twinB, twinA], request(), options()).delegationId).toBe("d-a");
  });

  it("when none allows the request, refuses with the candidate that passed the most checks, and records what each said", () => {
    const tpmOnly = delegation({ id: "d-tpm", requireAttestor: "tpm" });
    const otherAudience = delegation({ id: "d-aud", audiences: ["billing"] });
    const r = refusal(() => decideDelegation([tpmOnly, otherAudience, narrow], request({ actorAttestor: "join_token", requestedScope: ["repo:write"], requestedAudiences: [API] }), options()));
    // d-tpm fails at the attestor, d-aud at the audience, d-narrow at the scope: the furthest.
    expect(r.code).toBe("scope_not_allowed");
    expect(r.internal).toMatch(/d-tpm: delegation_attestation_insufficient/);
    expect(r.internal).toMatch(/d-aud: audience_not_allowed/);
    expect(r.internal).toMatch(/d-narrow: scope_not_allowed/);
  });
});
