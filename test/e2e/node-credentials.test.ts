import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import type { SvidFiles } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { HallmarkError } from "../../src/errors.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { runCli } from "../helpers/cli.js";
import { KeptAliveNode, waitFor } from "../helpers/kept-alive.js";
import { admitJoinTokenNode } from "../helpers/nodes.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/**
 * Issue 7, item 1 and 2: a node SVID works only while it is the node's current one and unexpired,
 * checked on every request, on connections that stay open across the change.
 */
const OVERLAP_SECONDS = 60;

let server: TestServer;
let offsetMs = 0;
const clock = () => new Date(Date.now() + offsetMs);

/** Moves the server's clock for the duration of `check` only: issuance in between would mint certificates from the future. */
async function later<T>(seconds: number, check: () => Promise<T>): Promise<T> {
  offsetMs = seconds * 1000;
  try {
    return await check();
  } finally {
    offsetMs = 0;
  }
}

beforeAll(async () => {
  server = await startTestServer({
    clock,
    overrides: { svid: { nodeTtl: 3600, x509Ttl: 3600, jwtTtl: 300, maxTtl: 86400, nodeRenewalOverlap: OVERLAP_SECONDS } },
  });
});
afterAll(async () => {
  await server?.destroy();
});

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));

const admitNode = (id: string): Promise<SvidFiles> => admitJoinTokenNode(server, id);

async function auditCodes(spiffeId: string): Promise<string[]> {
  const store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
  try {
    return (await store.audit.list(0, 100_000)).filter((r) => r.actor === spiffeId && r.outcome === "refused").map((r) => r.code ?? "");
  } finally {
    await store.close();
  }
}

describe("node SVID supersession", () => {
  it("keeps the renewed-away SVID working only for the overlap, then refuses it on the same open connection", async () => {
    const nodeId = "spiffe://example.org/node/renewing";
    const workload = "spiffe://example.org/renewing/web";
    await admin("POST", "/admin/entries", { parent_id: nodeId, spiffe_id: workload, selectors: [] });
    const old = new KeptAliveNode(server.url, await admitNode(nodeId));
    try {
      expect((await old.x509(workload)).status).toBe(200);
      const renewed = await old.renew();
      expect(renewed.status).toBe(200);
      // In flight during the rotation: the old SVID still works, on the same connection.
      expect((await old.x509(workload)).status).toBe(200);
      const refused = await later(OVERLAP_SECONDS + 1, () => old.x509(workload));
      expect(refused.status).toBe(401);
      expect(refused.body.code).toBe("node_svid_superseded");
      expect(refused.connection).toBe("close");
      expect(old.sockets.size).toBe(1);
      await waitFor(() => old.closed, "the server to close the refused connection");
      expect(await auditCodes(nodeId)).toContain("node_svid_superseded");
    } finally {
      old.destroy();
    }
  });

  it("kills every pre-eviction SVID for good, even after the node attests again", async () => {
    const nodeId = "spiffe://example.org/node/evicted";
    const workload = "spiffe://example.org/evicted/web";
    await admin("POST", "/admin/entries", { parent_id: nodeId, spiffe_id: workload, selectors: [] });
    const before = new KeptAliveNode(server.url, await admitNode(nodeId));
    try {
      expect((await before.x509(workload)).status).toBe(200);
      await admin("POST", "/admin/nodes/evict", { spiffe_id: nodeId });
      const evicted = await before.x509(workload);
      expect(evicted.body.code).toBe("node_evicted");
      // Back with a new join token: the new SVID works, the pre-eviction one never again.
      const after = new KeptAliveNode(server.url, await admitNode(nodeId));
      try {
        expect((await after.x509(workload)).status).toBe(200);
        const fresh = new KeptAliveNode(server.url, before.svid);
        const again = await fresh.x509(workload);
        fresh.destroy();
        expect(again.status).toBe(401);
        expect(again.body.code).toBe("node_svid_superseded");
      } finally {
        after.destroy();
      }
    } finally {
      before.destroy();
    }
  });

  it("ban refuses re-attestation with a new token until unban", async () => {
    const nodeId = "spiffe://example.org/node/banned";
    const first = new KeptAliveNode(server.url, await admitNode(nodeId));
    try {
      const banned = await runCli(["node", "ban", "--admin-socket", server.adminSocket, "--spiffe-id", nodeId]);
      expect(banned).toMatchObject({ code: 0, stdout: `banned ${nodeId}\n` });
      expect((await first.renew()).body.code).toBe("node_evicted");
      const refused = await admitNode(nodeId).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(HallmarkError);
      expect((refused as HallmarkError).code).toBe("node_banned");
      const listed = (await admin("GET", "/admin/nodes")) as { nodes: Array<{ spiffe_id: string; banned: boolean; evicted: boolean }> };
      expect(listed.nodes.find((n) => n.spiffe_id === nodeId)).toMatchObject({ banned: true, evicted: true });
      expect((await runCli(["node", "list", "--admin-socket", server.adminSocket])).stdout).toMatch(new RegExp(`${nodeId}.*EVICTED  BANNED`));
      expect((await runCli(["node", "unban", "--admin-socket", server.adminSocket, "--spiffe-id", nodeId])).code).toBe(0);
      const back = new KeptAliveNode(server.url, await admitNode(nodeId));
      try {
        expect((await back.renew()).status).toBe(200);
      } finally {
        back.destroy();
      }
    } finally {
      first.destroy();
    }
  });
});

describe("node SVID expiry", () => {
  // The idle connection closed by the server at expiry, in real time: test/e2e/node-svid-idle-expiry.test.ts.
  it("refuses an expired SVID on a connection opened while it was valid, and closes that connection", async () => {
    const nodeId = "spiffe://example.org/node/expiring";
    const workload = "spiffe://example.org/expiring/web";
    await admin("POST", "/admin/entries", { parent_id: nodeId, spiffe_id: workload, selectors: [] });
    const node = new KeptAliveNode(server.url, await admitNode(nodeId));
    try {
      expect((await node.x509(workload)).status).toBe(200);
      const refused = await later(server.config.svid.nodeTtl + 60, () => node.x509(workload));
      expect(refused.status).toBe(401);
      expect(refused.body.code).toBe("node_svid_expired");
      expect(refused.connection).toBe("close");
      await waitFor(() => node.closed, "the server to close the expired connection");
      expect(node.sockets.size).toBe(1);
    } finally {
      node.destroy();
    }
  });
});


describe("reserved SPIFFE IDs", () => {
  const refusal = async (path: string, body: unknown) => {
    const r = await adminRequest(server.adminSocket, "POST", path, body);
    return { status: r.status, code: (r.body as { code?: string }).code };
  };
  const entry = (spiffeId: string) => ({ parent_id: "spiffe://example.org/node/any", spiffe_id: spiffeId, selectors: [] });
  const token = (spiffeId: string) => ({ spiffe_id: spiffeId, ttl_seconds: 60 });

  it("keeps Hallmark's namespace for the server: no entry or join token may name it", async () => {
    for (const id of ["spiffe://example.org/hallmark/server", "spiffe://example.org/hallmark", "spiffe://example.org/hallmark/agent/tpm/abc"]) {
      expect(await refusal("/admin/entries", entry(id))).toEqual({ status: 403, code: "spiffe_id_reserved" });
      expect(await refusal("/admin/tokens", token(id))).toEqual({ status: 403, code: "spiffe_id_reserved" });
    }
    // A path that merely starts with the same letters is an ordinary ID.
    expect((await refusal("/admin/entries", entry("spiffe://example.org/hallmarked/web"))).status).toBe(201);
  });

  it("keeps a node's ID for that node, and a workload's ID away from join tokens", async () => {
    const nodeId = "spiffe://example.org/node/reserved";
    await admitNode(nodeId);
    expect(await refusal("/admin/entries", entry(nodeId))).toEqual({ status: 403, code: "spiffe_id_reserved" });
    // The same join-token node may be re-admitted with a new token (after an eviction, say).
    expect((await refusal("/admin/tokens", token(nodeId))).status).toBe(201);
    await admin("POST", "/admin/entries", entry("spiffe://example.org/reserved/web"));
    expect(await refusal("/admin/tokens", token("spiffe://example.org/reserved/web"))).toEqual({ status: 403, code: "spiffe_id_reserved" });
  });

  it("says so on the CLI in one line with exit 1", async () => {
    const r = await runCli(["entry", "create", "--admin-socket", server.adminSocket, "--parent-id", "spiffe://example.org/node/any", "--spiffe-id", "spiffe://example.org/hallmark/server"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^hallmark: spiffe_id_reserved: .*hallmark\/server/);
  });
});

describe("entitlement of a named identity (looked up by node and SPIFFE ID)", () => {
  it("issues an alias entry's identity to a node whose selectors match, by name, and refuses a node whose do not", async () => {
    const a = await admitNode("spiffe://example.org/node/alias-a");
    const b = await admitNode("spiffe://example.org/node/alias-b");
    const nodes = (await admin("GET", "/admin/nodes")) as { nodes: Array<{ spiffe_id: string; selectors: string[] }> };
    const selectorsA = nodes.nodes.find((n) => n.spiffe_id === "spiffe://example.org/node/alias-a")!.selectors;
    const aliasId = "spiffe://example.org/alias/shared";
    await admin("POST", "/admin/entries", { parent_id: "spiffe://example.org/hallmark/server", spiffe_id: aliasId, selectors: selectorsA });
    // Another entry with the same SPIFFE ID, parented elsewhere: it must not widen the entitlement.
    await admin("POST", "/admin/entries", { parent_id: "spiffe://example.org/node/someone-else", spiffe_id: aliasId, selectors: [] });
    const nodeA = new KeptAliveNode(server.url, a);
    const nodeB = new KeptAliveNode(server.url, b);
    try {
      const okA = await nodeA.x509(aliasId);
      expect(okA.status).toBe(200);
      expect(okA.body.spiffe_id).toBe(aliasId);
      const refusedB = await nodeB.x509(aliasId);
      expect(refusedB.status).toBe(403);
      expect(refusedB.body.code).toBe("not_entitled");
    } finally {
      nodeA.destroy();
      nodeB.destroy();
    }
  });
});
