import pg from "pg";

/**
 * Fills a PostgreSQL database that a replica has already migrated with `nodes` attested nodes
 * (spiffe://example.org/node/bulk-N, join_token, 0 ≤ N < nodes) and `entries` registration
 * entries, with their `created` changes and the revision counter, as the store's own writes leave
 * them (src/store/postgres/repositories.ts: selectors a sorted JSON list, times in milliseconds).
 * The first `firstNodeEntries` entries belong to bulk-0 (a node with more than one page); the
 * others are spread over all nodes. Bench-only, in one transaction of set-based INSERTs: 100,000
 * entries through the admin API take minutes, and what the bench measures is a replica starting
 * on them, not their creation. ANALYZE at the end stands for autovacuum, which would have run on
 * a database that grew to this size.
 */
export async function bulkFillPostgres(dbUrl: string, o: { nodes: number; entries: number; firstNodeEntries: number }): Promise<void> {
  const c = new pg.Client({ connectionString: dbUrl });
  await c.connect();
  try {
    const now = Date.now();
    await c.query("BEGIN");
    await c.query(
      `INSERT INTO nodes (spiffe_id, attestor_type, hardware_id, selectors, can_reattest, serial, expires_at, evicted, created_at, updated_at)
       SELECT 'spiffe://example.org/node/bulk-' || n, 'join_token', NULL, '[]'::jsonb, false, NULL, $2::bigint + 3600000, false, $2, $2
       FROM generate_series(0, $1::int - 1) AS n`,
      [o.nodes, now],
    );
    // Entry n's parent: bulk-0 for the first firstNodeEntries, then node n mod nodes.
    await c.query(
      `INSERT INTO entries (id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, dns_names, admin, hint, federates_with, created_at)
       SELECT gen_random_uuid()::text, 'spiffe://example.org/bulk/w' || n,
              'spiffe://example.org/node/bulk-' || CASE WHEN n < $3 THEN 0 ELSE n % $2 END,
              jsonb_build_array('unix:uid:' || n), NULL, NULL, '[]'::jsonb, false, '', '[]'::jsonb, $4::bigint + n
       FROM generate_series(0, $1::int - 1) AS n`,
      [o.entries, o.nodes, o.firstNodeEntries, now],
    );
    // Revisions continue from the counter (the seeding replica may have logged changes already).
    await c.query(
      `INSERT INTO entry_changes (revision, entry_id, kind, parent_id, selectors, changed_at)
       SELECT r.revision + row_number() OVER (ORDER BY e.created_at, e.id), e.id, 'created', e.parent_id, e.selectors, e.created_at
       FROM entries e CROSS JOIN entry_revision r
       WHERE e.id NOT IN (SELECT entry_id FROM entry_changes)`,
    );
    await c.query("UPDATE entry_revision SET revision = (SELECT MAX(revision) FROM entry_changes) WHERE id = 1");
    await c.query("COMMIT");
    await c.query("ANALYZE");
  } finally {
    await c.end();
  }
}
