import { describe, expect, it } from "vitest";
import { SpiffeId, TrustDomain, parseMemberId } from "../../src/spiffe/id.js";

// Cases from the SPIFFE-ID standard (spiffe/spiffe standards/SPIFFE-ID.md, sections 2.1-2.3).
describe("SPIFFE ID parsing", () => {
  it.each([
    "spiffe://example.org",
    "spiffe://example.org/workload",
    "spiffe://a-b_c.d/x/Y.z-_/0",
    `spiffe://example.org/${"a".repeat(2000)}`,
  ])("accepts %s", (id) => {
    expect(SpiffeId.parse(id).toString()).toBe(id);
  });

  it.each([
    ["", "empty"],
    ["http://example.org/x", "scheme"],
    ["SPIFFE://example.org/x", "scheme"],
    ["spiffe://", "trust domain is missing"],
    ["spiffe:///x", "trust domain is missing"],
    ["spiffe://Example.org/x", "lowercase"],
    ["spiffe://exa mple.org/x", "lowercase"],
    ["spiffe://user@example.org/x", "userinfo"],
    ["spiffe://example.org:8080/x", "port"],
    ["spiffe://example.org/x?y=1", "query"],
    ["spiffe://example.org/x#frag", "query and fragment"],
    ["spiffe://example.org/", "trailing"],
    ["spiffe://example.org/x/", "trailing"],
    ["spiffe://example.org//x", "empty path segment"],
    ["spiffe://example.org/./x", "'.'"],
    ["spiffe://example.org/x/..", "'..'"],
    ["spiffe://example.org/x%20y", "path segments"],
    ["spiffe://example.org/x y", "path segments"],
    [`spiffe://example.org/${"a".repeat(2048)}`, "longer than 2048"],
  ])("refuses %j (%s)", (id, why) => {
    expect(() => SpiffeId.parse(id)).toThrowError(expect.objectContaining({ code: "invalid_spiffe_id", message: expect.stringContaining(why) }));
  });

  it("checks trust domain membership", () => {
    const td = TrustDomain.parse("example.org");
    expect(parseMemberId("spiffe://example.org/a", td).path).toBe("/a");
    expect(() => parseMemberId("spiffe://other.org/a", td)).toThrowError(expect.objectContaining({ code: "spiffe_id_outside_trust_domain" }));
    expect(() => parseMemberId("spiffe://example.org", td)).toThrowError(expect.objectContaining({ code: "invalid_spiffe_id" }));
    expect(() => TrustDomain.parse("Example.org")).toThrowError(expect.objectContaining({ code: "invalid_trust_domain" }));
  });
});
