import { afterAll, beforeAll, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { attest, joinTokenProducer, type SvidFiles } from "../../src/client/attest.js";
import { writeSvidFiles } from "../../src/client/files.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { NodeClient } from "../../src/client/node.js";
import { isHallmarkError } from "../../src/errors.js";
import { pemBlocks } from "../../src/pki/pem.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 8: a whole scheduled CA rotation (prepare, activate, retire; short TTLs, real time) with
 * clients that never refresh their trust bundle by hand. One keeps calling and follows the
 * bundle the server sends; one sleeps through prepare and activate holding only the first root,
 * and still verifies the server through the cross-signed CA certificate; one holding only a
 * retired root is told, in words, that its bundle predates a rotation.
 */
const CA_TTL_SECONDS = 24;
let server: TestServer;
const files = tempDir("rotation-clients");

beforeAll(async () => {
  server = await startTestServer({
    overrides: {
      ca: { keyType: "ec-p256", ttl: CA_TTL_SECONDS, rotation: { prepareAt: 0.3, activateAt: 0.5, checkInterval: 1 } },
      svid: { nodeTtl: 20, x509Ttl: 3, jwtTtl: 3, maxTtl: 3600, nodeRenewalOverlap: 0 },
    },
  });
});
afterAll(async () => {
  await server?.destroy();
  files.remove();
});

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const x509Keys = async () =>
  ((await admin("GET", "/admin/ca/keys")) as { keys: Array<{ id: string; kind: string; status: string }> }).keys.filter((k) => k.kind === "x509");

/** A node admitted with a join token; its SVID, key and (separately) its bundle file on disk. */
async function admit(name: string, bundlePem: string): Promise<{ dir: string; bundleFile: string; svid: SvidFiles }> {
  const nodeId = `spiffe://example.org/node/${name}`;
  await admin("POST", "/admin/entries", { parent_id: nodeId, spiffe_id: `spiffe://example.org/${name}/web`, selectors: [] });
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: nodeId, ttl_seconds: 600 })) as { token: string };
  const svid = await attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer: joinTokenProducer(token) });
  const dir = join(files.path, name);
  writeSvidFiles(dir, svid);
  const bundleFile = join(files.path, `${name}-bundle.pem`);
  writeFileSync(bundleFile, bundlePem);
  return { dir, bundleFile, svid };
}

/** A node client over the files on disk, as `hallmark fetch` builds one: the bundle file is kept current by the client. */
function clientFor(node: { dir: string; bundleFile: string }): NodeClient {
  const read = (name: string) => readFileSync(join(node.dir, name), "utf8");
  const tls = { certPem: read("svid.pem"), keyPem: read("svid.key"), trustBundlePem: readFileSync(node.bundleFile, "utf8") };
  return new NodeClient(server.url, tls, node.bundleFile);
}

it("keeps clients working through prepare, activate and retire without a hand-refreshed bundle", { timeout: 90_000 }, async () => {
  const firstBundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  const [firstRoot] = pemBlocks(firstBundle);
  expect(pemBlocks(firstBundle)).toHaveLength(1);
  const firstKey = (await x509Keys()).find((k) => k.status === "active")!.id;

  const busy = await admit("busy", firstBundle);
  const sleeper = await admit("sleeper", firstBundle);

  // The busy client: renews its node SVID at half-life and fetches workload SVIDs, never touching its bundle file.
  let calls = 0;
  let renewals = 0;
  let client = clientFor(busy);
  let nodeExpires = Date.parse(busy.svid.expiresAt);
  let sleeperChecked = false;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const keys = await x509Keys();
    const firstRetired = !keys.some((k) => k.id === firstKey);
    if (Date.now() > nodeExpires - 10_000) {
      const renewed = await client.renew();
      client.close();
      writeSvidFiles(busy.dir, { ...renewed, bundlePem: renewed.bundlePem });
      nodeExpires = Date.parse(renewed.expiresAt);
      renewals += 1;
      client = clientFor(busy);
    }
    const x509 = await client.fetchX509("spiffe://example.org/busy/web");
    expect(x509.spiffeId).toBe("spiffe://example.org/busy/web");
    await client.fetchJwt(["https://api.example.org"], "spiffe://example.org/busy/web");
    calls += 2;

    // The sleeper wakes once a new key signs and the first is still published: only its old root in hand.
    if (!sleeperChecked && keys.some((k) => k.status === "previous" && k.id === firstKey)) {
      const stale = clientFor(sleeper);
      try {
        expect(pemBlocks(stale.trustBundlePem)).toEqual([firstRoot]);
        const fetched = await stale.fetchX509("spiffe://example.org/sleeper/web");
        expect(fetched.spiffeId).toBe("spiffe://example.org/sleeper/web");
        // It learnt the new root from that answer, and wrote it to its bundle file.
        expect(pemBlocks(readFileSync(sleeper.bundleFile, "utf8")).length).toBeGreaterThanOrEqual(2);
      } finally {
        stale.close();
      }
      sleeperChecked = true;
    }
    if (firstRetired && sleeperChecked) break;
    await sleep(500);
  }
  client.close();

  expect(sleeperChecked).toBe(true);
  const keys = await x509Keys();
  expect(keys.some((k) => k.id === firstKey)).toBe(false);
  expect(renewals).toBeGreaterThanOrEqual(1);
  expect(calls).toBeGreaterThan(10);
  // The busy client's file is the server's bundle now: the first root is gone from both.
  const current = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  expect(readFileSync(busy.bundleFile, "utf8")).toBe(current);
  expect(pemBlocks(current).some((c) => c.equals(firstRoot!))).toBe(false);

  // A client whose bundle holds only the retired root cannot verify the server, and is told why.
  const retiredOnly = join(files.path, "retired-only.pem");
  writeFileSync(retiredOnly, firstBundle);
  const lost = clientFor({ dir: busy.dir, bundleFile: retiredOnly });
  try {
    const e = await lost.fetchX509("spiffe://example.org/busy/web").catch((err: unknown) => err);
    expect(isHallmarkError(e) && e.code).toBe("server_untrusted");
    expect((e as Error).message).toMatch(/predates a CA rotation.*hallmark bundle show/);
    // Nothing authenticated came back: the file is untouched.
    expect(readFileSync(retiredOnly, "utf8")).toBe(firstBundle);
  } finally {
    lost.close();
  }
});
