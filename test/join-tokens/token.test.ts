import { expect, it } from "vitest";
import { joinTokenHash, looksLikeJoinToken, newJoinToken } from "../../src/join-tokens/token.js";

it("makes 43-character base64url tokens that never start with '-' (which a command line reads as a flag)", () => {
  // One random base64url token in 64 starts with '-': among 2,000, one would all but surely.
  const tokens = Array.from({ length: 2000 }, () => newJoinToken());
  expect(tokens.filter((t) => t.startsWith("-"))).toEqual([]);
  expect(tokens.every(looksLikeJoinToken)).toBe(true);
  expect(new Set(tokens).size).toBe(tokens.length);
  // '-' still occurs inside tokens: only the first character is constrained.
  expect(tokens.some((t) => t.includes("-"))).toBe(true);
  expect(joinTokenHash(tokens[0]!)).toMatch(/^[0-9a-f]{64}$/);
});
