import { describe, expect, it } from "vitest";
import { z } from "zod";
import { timeOrderedSerial, timeOrderedUuid } from "../src/time-ordered-id.js";

// 2026-12-01T00:00:00.000Z
const T = Date.UTC(2026, 11, 1);

describe("time-ordered ids", () => {
  it("a UUIDv7 per RFC 9562 §5.7: version 7, variant 10, the 48-bit ms time first", () => {
    const id = timeOrderedUuid(T);
    expect(z.uuidv7().safeParse(id).success).toBe(true); // zod's own RFC 9562 pattern
    expect(z.uuidv4().safeParse(id).success).toBe(false);
    expect(parseInt(id.replace(/-/g, "").slice(0, 12), 16)).toBe(T);
    expect(id[14]).toBe("7");
    expect(["8", "9", "a", "b"]).toContain(id[19]);
  });

  it("sorts by time as text (what the index sees), and is unique within one millisecond (across refills of the random pool)", () => {
    const later = [timeOrderedUuid(T + 1), timeOrderedUuid(T + 1000), timeOrderedUuid(T + 86_400_000)];
    for (const l of later) expect(timeOrderedUuid(T) < l).toBe(true);
    const same = new Set(Array.from({ length: 10_000 }, () => timeOrderedUuid(T)));
    expect(same.size).toBe(10_000);
  });

  it("a certificate serial: 16 octets, positive without a pad byte, time first, then 80 random bits", () => {
    const s = timeOrderedSerial(T);
    expect(s.length).toBe(16);
    expect(s[0]! & 0x80).toBe(0);
    expect(s[0]).not.toBe(0);
    expect(s.readUIntBE(0, 6)).toBe(T);
    const tails = new Set(Array.from({ length: 10_000 }, () => timeOrderedSerial(T).subarray(6).toString("hex")));
    expect(tails.size).toBe(10_000);
    expect(timeOrderedSerial(T).toString("hex") < timeOrderedSerial(T + 1).toString("hex")).toBe(true);
  });
});
