import type { Store } from "../store/types.js";

/**
 * Deletes expired attestation sessions (their nonces can no longer be used) and expired join
 * tokens, so that what anonymous callers create does not stay in the database for ever, entry
 * changes older than `entryChangeRetentionSeconds` (agents that far behind resync in full),
 * DPoP proofs whose window has closed (they can no longer be replayed), and expired access tokens
 * (an expired token is inactive whether or not its record remains).
 */
export async function purgeExpired(
  store: Store,
  now: Date,
  entryChangeRetentionSeconds: number,
): Promise<{ sessions: number; joinTokens: number; entryChanges: number; dpopProofs: number; accessTokens: number }> {
  const sessions = await store.sessions.purgeExpired(now);
  const joinTokens = await store.joinTokens.purgeExpired(now);
  const entryChanges = await store.entries.pruneChanges(new Date(now.getTime() - entryChangeRetentionSeconds * 1000));
  const dpopProofs = await store.dpopProofs.purgeExpired(now);
  const accessTokens = await store.accessTokens.purgeExpired(now);
  return { sessions, joinTokens, entryChanges, dpopProofs, accessTokens };
}
