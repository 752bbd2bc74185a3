import { describe, expect, it } from "vitest";
import { auditRecordBody, auditRecordCanonical, canonicalJson } from "../../src/audit/log.js";
import type { AuditRecordInput } from "../../src/store/types.js";

/**
 * auditRecordCanonical spells the record body's sorted keys out instead of sorting them per record
 * (issue 10). Every chain hash and transparency leaf ever written is made of that string, so it
 * must stay byte for byte canonicalJson(auditRecordBody(r)): checked over records with every
 * optional member absent, present, empty, null (as rows may give them) and awkward text.
 */
const awkward = ["", "plain", 'quote " and \\ backslash', "line\nbreak\ttab", "\u0000\u001f\u007f", "bidi \u202e override", "emoji 😀", "lone \ud800 surrogate", "ünïcödé ℵ"];

/** A small deterministic generator: the same records every run. */
function* records(): Generator<AuditRecordInput & { seq: number; prevHash: string }> {
  let x = 7;
  const next = () => (x = (x * 1103515245 + 12345) % 2 ** 31);
  const pick = <T>(xs: readonly T[]) => xs[next() % xs.length]!;
  const optional = () => pick([undefined, null as unknown as undefined, ...awkward]);
  for (let i = 0; i < 500; i++) {
    yield {
      seq: pick([1, 2, 999, 2 ** 31, Number.MAX_SAFE_INTEGER]),
      prevHash: pick(["0".repeat(64), "ab".repeat(32)]),
      time: new Date(pick([0, 1_796_162_784_785, 253_402_300_799_999])),
      event: pick(["issue_jwt", "issue_x509", ...awkward]),
      outcome: pick(["success", "refused", "error"] as const),
      code: optional(),
      actor: optional(),
      spiffeId: optional(),
      attestor: optional(),
      serial: optional(),
      details: pick([
        {},
        { reason: pick(awkward) },
        { z: 1, a: [3, { y: undefined, b: null }], m: { k: pick(awkward), d: undefined } },
        { nested: { deeper: { deepest: [1.5, -0, true, false, null] } } },
      ]),
    };
  }
}

describe("the audit record's canonical JSON", () => {
  it("is canonicalJson of the record body, byte for byte", () => {
    let n = 0;
    for (const r of records()) {
      expect(auditRecordCanonical(r)).toBe(canonicalJson(auditRecordBody(r)));
      n++;
    }
    expect(n).toBe(500);
  });

  it("sorts the body's keys (what canonicalJson would do) and spells absent members null", () => {
    const json = auditRecordCanonical({ seq: 1, prevHash: "p", time: new Date(0), event: "e", outcome: "success", details: {} });
    expect(Object.keys(JSON.parse(json) as object)).toEqual(["actor", "attestor", "code", "details", "event", "outcome", "prevHash", "seq", "serial", "spiffeId", "time"]);
    expect(json).toBe('{"actor":null,"attestor":null,"code":null,"details":{},"event":"e","outcome":"success","prevHash":"p","seq":1,"serial":null,"spiffeId":null,"time":"1970-01-01T00:00:00.000Z"}');
  });
});
