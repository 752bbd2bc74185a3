import { createHash, randomBytes } from "node:crypto";

/**
 * Join tokens: 32 random bytes, base64url, shown once to the administrator. Only the SHA-256
 * is stored, so a copy of the database does not hold usable tokens. Never starting with '-':
 * one token in 64 would, and `--join-token -x…` reads as a flag to every argument parser
 * (ours, and the shells and tools an operator pastes it into).
 */
export function newJoinToken(): string {
  for (;;) {
    const token = randomBytes(32).toString("base64url");
    if (!token.startsWith("-")) return token;
  }
}

export function joinTokenHash(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** Shape check before touching the store: 43 base64url characters. */
export function looksLikeJoinToken(token: string): boolean {
  return /^[A-Za-z0-9_-]{43}$/.test(token);
}
