import type { Store } from "../store/types.js";

/**
 * Deletes expired attestation sessions (their nonces can no longer be used) and expired join
 * tokens, so that what anonymous callers create does not stay in the database for ever.
 */
export async function purgeExpired(store: Store, now: Date): Promise<{ sessions: number; joinTokens: number }> {
  const sessions = await store.sessions.purgeExpired(now);
  const joinTokens = await store.joinTokens.purgeExpired(now);
  return { sessions, joinTokens };
}
