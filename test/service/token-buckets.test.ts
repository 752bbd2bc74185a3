import { describe, expect, it } from "vitest";
import { TokenBuckets } from "../../src/service/token-buckets.js";

describe("TokenBuckets", () => {
  it("allows the burst, refuses the rest with a Retry-After, and refills at the rate", () => {
    let ms = 0;
    const b = new TokenBuckets({ perSecond: 2, burst: 3, maxKeys: 10, now: () => ms });
    expect([1, 2, 3, 4].map(() => b.take("a").ok)).toEqual([true, true, true, false]);
    expect(b.take("a")).toEqual({ ok: false, retryAfterSeconds: 1 });
    expect(b.take("b").ok).toBe(true); // each key its own bucket
    ms += 1000; // two tokens back, never more than the burst
    expect([1, 2, 3].map(() => b.take("a").ok)).toEqual([true, true, false]);
    ms += 60_000;
    expect([1, 2, 3, 4].map(() => b.take("a").ok)).toEqual([true, true, true, false]);
  });

  it("takes a cost of several tokens at once, or none of them", () => {
    let ms = 0;
    const b = new TokenBuckets({ perSecond: 10, burst: 100, maxKeys: 10, now: () => ms });
    expect(b.take("node", 64).ok).toBe(true);
    // 36 left: a second batch of 64 is refused whole and takes nothing, so 36 singles still pass.
    expect(b.take("node", 64)).toEqual({ ok: false, retryAfterSeconds: 3 });
    expect(Array.from({ length: 37 }, () => b.take("node").ok).filter(Boolean)).toHaveLength(36);
    ms += 6_400;
    expect(b.take("node", 64).ok).toBe(true);
  });

  it("neither drains nor refills when the clock steps back", () => {
    let ms = 10_000_000;
    const b = new TokenBuckets({ perSecond: 1000, burst: 2, maxKeys: 10, now: () => ms });
    expect(b.take("a").ok).toBe(true);
    ms -= 3_600_000;
    expect([1, 2].map(() => b.take("a").ok)).toEqual([true, false]);
  });

  it("never remembers more than maxKeys addresses, forgetting the least recently seen", () => {
    const ms = 0;
    const b = new TokenBuckets({ perSecond: 0.001, burst: 1, maxKeys: 100, now: () => ms });
    expect(b.take("kept").ok).toBe(true);
    for (let i = 0; i < 10_000; i++) {
      b.take(`10.0.${i >> 8}.${i & 255}`);
      if (i % 50 === 0) b.take("kept"); // recently seen: stays, and stays empty
      expect(b.size).toBeLessThanOrEqual(100);
    }
    expect(b.take("kept").ok).toBe(false);
    expect(b.take("10.0.0.0").ok).toBe(true); // forgotten long ago: a fresh bucket
  });
});
