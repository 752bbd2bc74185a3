import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { NodeClient } from "../../src/client/node.js";
import { type Replica, type ReplicaSet, startReplicaSet } from "../helpers/replicas.js";

/**
 * `workers: 2` on PostgreSQL: nothing is relayed by the primary there (NOTIFY and advisory locks
 * already cross processes); the group starts, issues with unique serials, and an entry created
 * through the admin socket (worker 0) answers long polls held on both workers (connections
 * alternate between them).
 */
const NODE = "spiffe://example.org/node/pg-workers";
let set: ReplicaSet;
let server: Replica;

beforeAll(async () => {
  set = await startReplicaSet("workers_pg");
  server = await set.start("a", { workers: 2 });
}, 60_000);
afterAll(async () => {
  await set?.destroy();
});

describe("hallmark server --workers 2 on PostgreSQL", () => {
  it("issues with unique serials and wakes long polls on both workers", async () => {
    const { token } = (await server.admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
    const { bundle_pem: trustBundlePem } = (await server.admin("GET", "/admin/bundle")) as { bundle_pem: string };
    const svid = await attest({ server: server.url, tls: { trustBundlePem }, producer: joinTokenProducer(token) });
    await server.admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/w/pg", selectors: [] });
    // A client per connection: cluster gives each new connection to the next worker.
    const clients = Array.from({ length: 4 }, () => new NodeClient([server.url], { trustBundlePem: svid.bundlePem, certPem: svid.certChainPem, keyPem: svid.privateKeyPem }));
    try {
      const issued = await Promise.all(clients.flatMap((c) => Array.from({ length: 5 }, () => c.fetchX509("spiffe://example.org/w/pg"))));
      expect(new Set(issued.map((i) => i.serial)).size).toBe(issued.length);
      const rows = await set.query<{ n: string }>("SELECT COUNT(DISTINCT serial) AS n FROM audit_log WHERE event = 'issue_x509'");
      expect(Number(rows[0]!.n)).toBe(issued.length);
      const first = await clients[0]!.entries({});
      const polls = clients.map((c) => c.entries({ since: first.revision, waitSeconds: 15 }));
      await new Promise((r) => setTimeout(r, 500));
      const created = (await server.admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/w/pg-heard", selectors: [] })) as { id: string };
      for (const answer of await Promise.all(polls)) {
        expect(answer.full).toBe(false);
        if (answer.full) continue;
        expect(answer.changes).toEqual([expect.objectContaining({ op: "created", entry: expect.objectContaining({ id: created.id }) })]);
      }
    } finally {
      for (const c of clients) c.close();
    }
  }, 30_000);
});
