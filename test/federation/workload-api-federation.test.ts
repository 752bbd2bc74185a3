import { chmodSync } from "node:fs";
import { join } from "node:path";
import { decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AgentCore, startAgentCore } from "../../src/agent/run-agent.js";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { type FetchedX509, NodeClient } from "../../src/client/node.js";
import { createLogger } from "../../src/log.js";
import { pemBlocks } from "../../src/pki/pem.js";
import { startWorkloadApi } from "../../src/workload-api/server.js";
import { unixWorkloadAttestor } from "../../src/workload-api/unix-attestor.js";
import { NOBODY, type UnixUser } from "../helpers/as-user.js";
import { runCli } from "../helpers/cli.js";
import { waitFor } from "../helpers/kept-alive.js";
import { adminOf, federateOverSpiffe, ownBundlePem, startForeignDomain } from "../helpers/federation.js";
import { hasPythonGrpc, NO_PYTHON_GRPC, pythonWorkloadCallAs } from "../helpers/python-workload-client.js";
import type { ServerProcess } from "../helpers/server-process.js";
import { type TestServer, startTestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 14 item 5: federation reaches workloads through the agent. example.org (in this process)
 * federates with partner.net (a separate `hallmark server`) over https_spiffe; an agent core of
 * example.org serves the Workload API on its real socket. The entry of uid 1000 federates with
 * partner.net, the entry of uid 65534 does not. Clients: Debian's python3-grpcio, run as those uids.
 */
if (!hasPythonGrpc) console.warn(`workload-api-federation: skipped: ${NO_PYTHON_GRPC}`);

const work = tempDir("fed-workload-api");
const dirA = join(work.path, "a");
const dirB = join(work.path, "b");
const socketPath = join(work.path, "run", "agent.sock");
const NODE = "spiffe://example.org/node/fed-agent";
const FEDERATING = "spiffe://example.org/fed-client";
const PLAIN = "spiffe://example.org/plain";
const PARTNER_API = "spiffe://partner.net/api";
const FED_USER: UnixUser = { uid: 1000, gid: 1000 };
const log = createLogger(process.env.HALLMARK_TEST_LOG ?? "silent");

let a: TestServer;
let b: ServerProcess;
let bUrl: string;
let core: AgentCore;
let api: Awaited<ReturnType<typeof startWorkloadApi>>;
/** A JWT-SVID of partner.net whose audience is the federating workload. */
let partnerJwt: string;

const adminA = (method: string, path: string, body?: unknown) => adminOf(dirA, method, path, body);
const call = (user: UnixUser, op: string, args: string[] = []) => pythonWorkloadCallAs(user, socketPath, join(work.path, "py"), op, args);
const first = (user: UnixUser, op: string, args: string[] = []) => call(user, op, args).line(1);
/** A bundle as the Workload API sends it: the DER certificates concatenated, here base64. */
const derOf = (pem: string) => Buffer.concat(pemBlocks(pem)).toString("base64");

/** A JWT-SVID issued by partner.net to a join-token node of its own, for `audience`. */
async function partnerJwtSvid(audience: string): Promise<string> {
  const nodeId = "spiffe://partner.net/node/p";
  const trustBundlePem = await ownBundlePem(dirB);
  const { token } = (await adminOf(dirB, "POST", "/admin/tokens", { spiffe_id: nodeId, ttl_seconds: 600 })).body as { token: string };
  const svid = await attest({ server: bUrl, tls: { trustBundlePem }, producer: joinTokenProducer(token) });
  await adminOf(dirB, "POST", "/admin/entries", { parent_id: nodeId, spiffe_id: PARTNER_API, selectors: ["unix:uid:7"] });
  const node = new NodeClient(bUrl, { certPem: svid.certChainPem, keyPem: svid.privateKeyPem!, trustBundlePem });
  try {
    return (await node.fetchJwt([audience])).token;
  } finally {
    node.close();
  }
}

beforeAll(async () => {
  chmodSync(work.path, 0o755); // the workload uids reach the socket and the python stubs
  a = await startTestServer({ dataDir: dirA });
  ({ server: b, url: bUrl } = await startForeignDomain(dirB, "partner.net"));
  await federateOverSpiffe(dirA, { dataDir: dirB, url: bUrl, trustDomain: "partner.net" });

  const { token } = (await adminA("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })).body as { token: string };
  core = await startAgentCore({
    server: a.url,
    trustBundlePem: await ownBundlePem(dirA),
    dataDir: join(work.path, "agent"),
    attestor: "join_token",
    producer: async () => joinTokenProducer(token),
    pollIntervalSeconds: 0.2,
    retry: { minMs: 100, maxMs: 500 },
    log,
  });
  api = await startWorkloadApi({ socketPath, identities: core.identities, attestor: unixWorkloadAttestor(), limits: { updateJitterMs: 50 } });
  // Entries created while the agent runs: the one that federates brings partner.net's bundle with it.
  await adminA("POST", "/admin/entries", { parent_id: NODE, spiffe_id: FEDERATING, selectors: [`unix:uid:${FED_USER.uid}`], federates_with: ["partner.net"] });
  await adminA("POST", "/admin/entries", { parent_id: NODE, spiffe_id: PLAIN, selectors: [`unix:uid:${NOBODY.uid}`] });
  await waitFor(() => core.entries.entries.size === 2 && core.identities.heldFederatedTrustDomains().has("partner.net"), "the entries and partner.net's bundle to reach the agent", 15_000);
  partnerJwt = await partnerJwtSvid(FEDERATING);
}, 60_000);

afterAll(async () => {
  await api?.close();
  await core?.close();
  await b?.stop();
  await a?.destroy();
  work.remove();
});

describe.skipIf(!hasPythonGrpc)("the Workload API hands out federated bundles by the caller's entries", () => {
  it("FetchX509SVID: federated_bundles holds partner.net's authorities for the federating caller only", async () => {
    const fed = await first(FED_USER, "x509svid");
    expect(fed.svids).toEqual([FEDERATING]);
    expect(fed.federated_bundles).toEqual({ "spiffe://partner.net": derOf(await ownBundlePem(dirB)) });
    const plain = await first(NOBODY, "x509svid");
    expect(plain.svids).toEqual([PLAIN]);
    expect(plain.federated_bundles).toEqual({});
  });

  it("FetchX509Bundles and FetchJWTBundles: both trust domains for the federating caller, its own only for the other", async () => {
    const x509 = (await first(FED_USER, "x509bundles", ["1"])).bundles as Record<string, string>;
    expect(Object.keys(x509).sort()).toEqual(["spiffe://example.org", "spiffe://partner.net"]);
    expect(x509["spiffe://partner.net"]).toBe(derOf(await ownBundlePem(dirB)));
    expect(x509["spiffe://example.org"]).toBe(derOf(await ownBundlePem(dirA)));
    expect(Object.keys((await first(NOBODY, "x509bundles", ["1"])).bundles as object)).toEqual(["spiffe://example.org"]);

    const jwt = (await first(FED_USER, "jwtbundles")).bundles as Record<string, { keys: Array<{ kid: string }> }>;
    expect(Object.keys(jwt).sort()).toEqual(["spiffe://example.org", "spiffe://partner.net"]);
    // The key that signed partner.net's JWT-SVID is among the partner's JWT authorities.
    expect(jwt["spiffe://partner.net"]!.keys.map((k) => k.kid)).toContain(decodeProtectedHeader(partnerJwt).kid);
    expect(Object.keys((await first(NOBODY, "jwtbundles")).bundles as object)).toEqual(["spiffe://example.org"]);
  });

  it("ValidateJWTSVID: a partner.net JWT-SVID is accepted for the federating caller, refused (INVALID_ARGUMENT) for the other", async () => {
    expect(await first(FED_USER, "validate", [FEDERATING, partnerJwt])).toEqual({ spiffe_id: PARTNER_API });
    const refused = await first(NOBODY, "validate", [FEDERATING, partnerJwt]);
    expect(refused.error).toBe("INVALID_ARGUMENT");
    expect(refused.details).toMatch(/^workload_jwt_invalid: .*do not federate with spiffe:\/\/partner\.net/);
    // The federating caller still needs the right audience, as for its own domain's tokens.
    expect((await first(FED_USER, "validate", ["spiffe://example.org/other", partnerJwt])).error).toBe("INVALID_ARGUMENT");
  });

  it("a foreign bundle update reaches the open FetchX509Bundles stream", async () => {
    const before = await ownBundlePem(dirB);
    const stream = call(FED_USER, "x509bundles", ["6"]);
    try {
      expect(((await stream.line(1)).bundles as Record<string, string>)["spiffe://partner.net"]).toBe(derOf(before));
      const rotated = await runCli(["ca", "rotate", "--kind", "x509", "--step", "prepare", "--data-dir", dirB]);
      expect(rotated.code, rotated.stderr).toBe(0);
      // The server's own refresh loop may fetch partner.net's new bundle first (then this one is
      // "unchanged", seen once in CI); either way the stream must carry the new bundle below.
      expect((await adminA("POST", "/admin/federations/partner.net/refresh")).body.outcome).toMatch(/^(updated|unchanged)$/);
      const after = await ownBundlePem(dirB);
      expect(pemBlocks(after).length).toBe(pemBlocks(before).length + 1);
      // Each message is the full state; the stream may carry others (an SVID renewed) before this one.
      let seen: string | undefined;
      for (let n = 2; n <= 6 && seen !== derOf(after); n++) seen = ((await stream.line(n)).bundles as Record<string, string>)["spiffe://partner.net"];
      expect(seen).toBe(derOf(after));
    } finally {
      stream.child.kill();
    }
  });
});

describe("the node API carries federated bundles on every workload answer", () => {
  it("POST /v1/svids/jwt: the JWT authorities of the domains the entry federates with", async () => {
    const jwt = await core.node.call((c) => c.fetchJwt(["x"], FEDERATING));
    expect(Object.keys(jwt.federated_jwt_bundles ?? {})).toEqual(["partner.net"]);
    expect(jwt.federated_jwt_bundles!["partner.net"]!.keys.map((k) => k.kid)).toContain(decodeProtectedHeader(partnerJwt).kid);
    expect((await core.node.call((c) => c.fetchJwt(["x"], PLAIN))).federated_jwt_bundles).toEqual({});
  });

  it("POST /v1/svids/x509/batch: each result with its entry's federated bundles", async () => {
    const [fed, plain] = (await core.node.call((c) => c.fetchX509Batch([FEDERATING, PLAIN]))) as FetchedX509[];
    expect(fed!.federatedBundles).toEqual({ "partner.net": await adminA("GET", "/admin/federations/partner.net/bundle").then((r) => r.body.bundle_pem) });
    expect(plain!.federatedBundles).toEqual({});
  });
});
