import { X509Certificate, createPrivateKey, createPublicKey } from "node:crypto";
import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { SignJWT, UnsecuredJWT, decodeProtectedHeader, generateKeyPair, importJWK, jwtVerify, type JWK } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AgentCore, startAgentCore } from "../../src/agent/run-agent.js";
import { SvidCache } from "../../src/agent/svid-cache.js";
import { joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { HallmarkError } from "../../src/errors.js";
import { createLogger } from "../../src/log.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";
import { waitFor } from "../helpers/kept-alive.js";

/**
 * Issue 9, the agent core in-process against a real server: attestation with a join token, the
 * data directory, a restart without the token, entries reaching identities by selector, JWT-SVIDs
 * that verify against the JWT bundle, and an eviction that empties everything.
 */
const NODE = "spiffe://example.org/node/agent-core";
const log = createLogger(process.env.HALLMARK_TEST_LOG ?? "silent");
let server: TestServer;
let bundle: string;
const data = tempDir("agent-core");
const cores: AgentCore[] = [];

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));

async function startCore(producer: () => Promise<ReturnType<typeof joinTokenProducer>>): Promise<AgentCore> {
  const core = await startAgentCore({
    server: server.url,
    trustBundlePem: bundle,
    dataDir: data.path,
    attestor: "join_token",
    producer,
    pollIntervalSeconds: 0.2,
    retry: { minMs: 100, maxMs: 500 },
    log,
  });
  cores.push(core);
  return core;
}

const tokenNeverAgain = async (): Promise<never> => {
  throw new Error("the agent asked for its join token a second time");
};

beforeAll(async () => {
  server = await startTestServer();
  bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
});
afterAll(async () => {
  for (const c of cores) await c.close();
  await server?.destroy();
  data.remove();
});

describe("agent core", () => {
  let core: AgentCore;

  it("attests with a join token and stores its SVID, key and bundle with private modes", async () => {
    const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
    core = await startCore(async () => joinTokenProducer(token));
    expect(core.node.spiffeId).toBe(NODE);
    expect(statSync(data.path).mode & 0o777).toBe(0o700);
    expect(statSync(join(data.path, "svid.key")).mode & 0o777).toBe(0o600);
    for (const f of ["svid.pem", "bundle.pem", "node.json"]) expect(existsSync(join(data.path, f)), f).toBe(true);
    expect(new X509Certificate(readFileSync(join(data.path, "svid.pem"))).subjectAltName).toContain(NODE);
  });

  it("serves an entry's X.509-SVID to matching selectors only, with its hint, and drops it when the entry goes", async () => {
    // Listening before the entries exist: the agent's long poll may hear of them at once.
    let changes = 0;
    core.identities.onChange(() => changes++);
    const created = (await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/billing", selectors: ["unix:uid:1001"], hint: "billing" })) as { id: string };
    await admin("POST", "/admin/entries", { parent_id: "spiffe://example.org/node/other", spiffe_id: "spiffe://example.org/elsewhere", selectors: ["unix:uid:1001"] });
    await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/everyone", selectors: [] });
    await waitFor(() => core.entries.entries.has(created.id), "the entry to reach the agent", 10_000);

    const svids = await core.identities.x509Svids(["unix:uid:1001", "unix:gid:1001"]);
    expect(svids.map((s) => s.spiffeId)).toEqual(["spiffe://example.org/billing"]);
    const [svid] = svids;
    expect(svid!.hint).toBe("billing");
    const leaf = new X509Certificate(svid!.certChain[0]!);
    expect(leaf.subjectAltName).toContain("URI:spiffe://example.org/billing");
    // The chain ends at a certificate the bundle's CA signed.
    const top = new X509Certificate(svid!.certChain.at(-1)!);
    expect(svid!.bundle.some((b) => top.checkIssued(new X509Certificate(b)) && top.verify(new X509Certificate(b).publicKey))).toBe(true);
    // The key is the certificate's.
    expect(createPublicKey(createPrivateKey({ key: svid!.privateKey, format: "der", type: "pkcs8" })).export({ format: "der", type: "spki" }))
      .toEqual(leaf.publicKey.export({ format: "der", type: "spki" }));

    expect(await core.identities.x509Svids(["unix:uid:1002"])).toEqual([]);
    // An entry without selectors matches no workload.
    expect(await core.identities.x509Svids([])).toEqual([]);
    const bundles = await core.identities.x509Bundles();
    expect([...bundles.keys()]).toEqual(["spiffe://example.org"]);

    await admin("DELETE", `/admin/entries/${created.id}`);
    await waitFor(() => !core.entries.entries.has(created.id), "the deletion to reach the agent", 10_000);
    expect(await core.identities.x509Svids(["unix:uid:1001"])).toEqual([]);
    expect(changes).toBeGreaterThanOrEqual(2);
  });

  it("hands out JWT-SVIDs that verify with jose against the JWT bundle, and validates them", async () => {
    const e = (await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: "spiffe://example.org/api", selectors: ["unix:uid:1003"] })) as { id: string };
    await waitFor(() => core.entries.entries.has(e.id), "the entry to reach the agent", 10_000);
    const [jwt] = await core.identities.jwtSvids(["unix:uid:1003"], ["https://api.example.org"]);
    expect(jwt?.spiffeId).toBe("spiffe://example.org/api");
    // Cached until half its life: the same token again.
    expect((await core.identities.jwtSvids(["unix:uid:1003"], ["https://api.example.org"]))[0]?.token).toBe(jwt!.token);
    expect(await core.identities.jwtSvids(["unix:uid:1003"], ["https://api.example.org"], "spiffe://example.org/billing")).toEqual([]);
    expect(await core.identities.jwtSvids(["unix:uid:9"], ["https://api.example.org"])).toEqual([]);

    const jwks = (await core.identities.jwtBundles()).get("spiffe://example.org") as { keys: Array<JWK & { use?: string }> };
    const { kid, alg } = decodeProtectedHeader(jwt!.token);
    const { use: _use, ...key } = jwks.keys.find((k) => k.kid === kid)!;
    const { payload } = await jwtVerify(jwt!.token, await importJWK(key, alg!), { audience: "https://api.example.org" });
    expect(payload.sub).toBe("spiffe://example.org/api");

    const valid = await core.identities.validateJwtSvid(jwt!.token, "https://api.example.org");
    expect(valid.spiffeId).toBe("spiffe://example.org/api");
    await expect(core.identities.validateJwtSvid(jwt!.token, "https://other.example.org")).rejects.toMatchObject({ code: "jwt_svid_invalid" });
    await expect(core.identities.validateJwtSvid("not.a.jwt", "https://api.example.org")).rejects.toMatchObject({ code: "jwt_svid_invalid" });
    // Unsigned, and signed by a key that only borrows the bundle key's kid: both refused.
    const claims = { sub: "spiffe://example.org/api", aud: "https://api.example.org", exp: Math.floor(Date.now() / 1000) + 60 };
    await expect(core.identities.validateJwtSvid(new UnsecuredJWT(claims).encode(), "https://api.example.org")).rejects.toMatchObject({ code: "jwt_svid_invalid" });
    const { privateKey } = await generateKeyPair("ES256");
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: kid! }).sign(privateKey);
    await expect(core.identities.validateJwtSvid(forged, "https://api.example.org")).rejects.toMatchObject({ code: "jwt_svid_invalid" });
  });

  it("hands a workload with several identities a JWT-SVID for each, fetched together, and one token to concurrent askers", async () => {
    const ids = ["spiffe://example.org/multi/a", "spiffe://example.org/multi/b", "spiffe://example.org/multi/c"];
    const created: Array<{ id: string }> = [];
    for (const id of ids) created.push((await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: id, selectors: ["unix:uid:1004"] })) as { id: string });
    await waitFor(() => created.every((e) => core.entries.entries.has(e.id)), "the entries to reach the agent", 10_000);
    const jwks = (await core.identities.jwtBundles()).get("spiffe://example.org") as { keys: Array<JWK & { use?: string }> };
    // What the Workload API's per-uid allowance is asked for: the fetches a call needs, nothing for
    // what the cache holds or is fetching already (the second caller shares the first's fetches).
    const admitted: number[][] = [[], [], []];
    const [first, second] = await Promise.all([
      core.identities.jwtSvids(["unix:uid:1004"], ["https://multi.example.org"], undefined, (n) => admitted[0]!.push(n)),
      core.identities.jwtSvids(["unix:uid:1004"], ["https://multi.example.org"], undefined, (n) => admitted[1]!.push(n)),
    ]);
    await core.identities.jwtSvids(["unix:uid:1004"], ["https://multi.example.org"], undefined, (n) => admitted[2]!.push(n));
    expect(admitted).toEqual([[3], [], []]);
    const refuse = () => {
      throw new HallmarkError("workload_too_many_fetches", "no");
    };
    await expect(core.identities.jwtSvids(["unix:uid:1004"], ["https://new.example.org"], ids[0], refuse)).rejects.toMatchObject({ code: "workload_too_many_fetches" });
    expect(first!.map((s) => s.spiffeId).sort()).toEqual(ids);
    // The second caller shared the first one's fetches: the same tokens, not three more.
    expect(second!.map((s) => s.token)).toEqual(first!.map((s) => s.token));
    for (const s of first!) {
      const { kid, alg } = decodeProtectedHeader(s.token);
      const key = jwks.keys.find((k) => k.kid === kid)!;
      const { payload } = await jwtVerify(s.token, await importJWK(key, alg!), { audience: "https://multi.example.org" });
      expect(payload.sub).toBe(s.spiffeId);
    }
    for (const e of created) await admin("DELETE", `/admin/entries/${e.id}`);
  });

  it("restarts on its stored SVID without the join token", async () => {
    const before = readFileSync(join(data.path, "svid.pem"), "utf8");
    await core.close();
    core = await startCore(tokenNeverAgain);
    expect(core.node.spiffeId).toBe(NODE);
    expect(readFileSync(join(data.path, "svid.pem"), "utf8")).toBe(before);
    expect((await core.identities.jwtSvids(["unix:uid:1003"], ["aud"])).map((s) => s.spiffeId)).toEqual(["spiffe://example.org/api"]);
  });

  it("keeps at most maxCachedSvids X.509-SVIDs and still serves the others on demand", async () => {
    const small = "spiffe://example.org/node/agent-small-cache";
    const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: small, ttl_seconds: 600 })) as { token: string };
    const ids = [1, 2, 3, 4].map((i) => `spiffe://example.org/capped/${i}`);
    for (const id of ids) await admin("POST", "/admin/entries", { parent_id: small, spiffe_id: id, selectors: ["unix:uid:4000"] });
    const smallData = tempDir("agent-small-cache");
    try {
      const capped = await startAgentCore({
        server: server.url,
        trustBundlePem: bundle,
        dataDir: smallData.path,
        attestor: "join_token",
        producer: async () => joinTokenProducer(token),
        pollIntervalSeconds: 0.2,
        maxCachedSvids: 2,
        log,
      });
      cores.push(capped);
      expect(capped.entries.entries.size).toBe(4);
      expect(capped.svids.x509Count).toBe(2);
      expect((await capped.identities.x509Svids(["unix:uid:4000"])).map((s) => s.spiffeId).sort()).toEqual(ids);
      expect(capped.svids.x509Count).toBe(2);
      await capped.close();
    } finally {
      smallData.remove();
    }
  });

  it("two reconciles at once (entry syncs that overlap) have the server issue each missing SVID once", async () => {
    const ids = Array.from({ length: 12 }, (_, i) => `spiffe://example.org/reconciled/${i}`);
    for (const id of ids) await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: id, selectors: ["unix:uid:4100"] });
    await waitFor(() => ids.every((id) => [...core.entries.entries.values()].some((e) => e.spiffe_id === id)), "the entries to reach the agent", 10_000);
    // …and the core's own reconcile to have fetched them, so that none of its issuances lands in the count below.
    await waitFor(() => ids.every((id) => core.svids.holdsX509(id)), "the agent's cache to fetch them", 10_000);
    // A cache of its own on the same node identity: the core's cache fetched these already.
    const fresh = new SvidCache(core.node, { log });
    const audited = async () => ((await admin("GET", "/admin/audit/verify")) as { records: number }).records;
    const before = await audited();
    await Promise.all([fresh.reconcile(new Set(ids)), fresh.reconcile(new Set(ids))]);
    expect(fresh.x509Count).toBe(ids.length);
    // One audit record per issuance: the server signed each SVID once, not once per reconcile.
    expect((await audited()) - before).toBe(ids.length);
    await fresh.close();
  });

  it("stops serving at once when the node is evicted, and says why", async () => {
    expect((await core.identities.x509Svids(["unix:uid:1003"])).length).toBe(1);
    await admin("POST", "/admin/nodes/evict", { spiffe_id: NODE });
    const why = await core.failed;
    expect(why).toMatchObject({ code: "agent_node_removed" });
    expect(why.message).toContain("node_evicted");
    expect(await core.identities.x509Svids(["unix:uid:1003"])).toEqual([]);
    expect(await core.identities.jwtSvids(["unix:uid:1003"], ["aud"])).toEqual([]);
  });

  it("fails at once, without retrying, when no producer can be made for the first attestation", async () => {
    const empty = tempDir("agent-no-token");
    try {
      const start = startAgentCore({
        server: server.url,
        trustBundlePem: bundle,
        dataDir: empty.path,
        attestor: "join_token",
        producer: async () => {
          throw new Error("--join-token is required for the join_token attestor");
        },
        log,
      });
      await expect(start).rejects.toMatchObject({ code: "invalid_request", message: "--join-token is required for the join_token attestor" });
    } finally {
      empty.remove();
    }
  });

  it("refuses to attest again with a spent join token when no valid SVID is stored", async () => {
    await core.close();
    rmSync(join(data.path, "svid.pem"));
    await expect(startCore(tokenNeverAgain)).rejects.toMatchObject({ code: "agent_cannot_reattest" });
  });
});
