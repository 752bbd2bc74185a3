import Database from "better-sqlite3";
import * as x509 from "@peculiar/x509";
import { X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { type Server, createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { type TLSSocket, connect, createServer as createTlsServer } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_BUNDLE_BYTES, spiffeBundleJwks } from "../../src/issuer/bundle.js";
import { pemBlocks } from "../../src/pki/pem.js";
import { type CliResult, runCli } from "../helpers/cli.js";
import { adminOf, ownBundlePem as ownBundle, startForeignDomain } from "../helpers/federation.js";
import type { ServerProcess } from "../helpers/server-process.js";
import { type TestServer, startTestServer } from "../helpers/server.js";
import { testCert } from "../helpers/test-pki.js";
import { tempDir } from "../helpers/tmp.js";
import { makeWebPki } from "../helpers/web-pki.js";

/**
 * Issue 14 end to end: two Hallmark servers with trust domains, data directories and SoftHSM2
 * tokens of their own (example.org in this process, partner.net a separate `hallmark server`, as
 * SoftHSM is initialised once per process) federate both ways: example.org fetches partner.net's
 * bundle over https_spiffe (partner.net's main listener, its X509-SVID, authenticated by the
 * bundle given out of band and then by the last one fetched), partner.net fetches example.org's
 * over https_web (example.org's Web PKI listener, roots given with --web-roots). A workload in
 * each gets the other's bundle through `hallmark fetch x509`, and the two complete mutual TLS.
 * Then rotation, and every refusal with its code, its audit record and the last good bundle kept.
 */
const work = tempDir("federation-e2e");
const dirA = join(work.path, "a");
const dirB = join(work.path, "b");
let a: TestServer;
let b: ServerProcess;
let bUrl: string;
let webRoot: string;
let fake: Server;
let fakeUrl: string;
/** What the fake endpoint answers next. */
let fakeAnswer: { status: number; body: string | Buffer; headers?: Record<string, string> } = { status: 200, body: "{}" };

const onA = (args: string[]) => runCli([...args, "--data-dir", dirA]);
/** The admin API of A directly (the CLI's own behaviour is covered by the calls above; this keeps the file fast). */
const adminA = (method: string, path: string, body?: unknown) => adminOf(dirA, method, path, body);
const onB = (args: string[]) => runCli([...args, "--data-dir", dirB]);
const ok = (r: CliResult) => {
  if (r.code !== 0) throw new Error(`hallmark exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
};

/** The audit records of one event on a server's database (read-only, beside the server). */
function auditOf(dataDir: string, event: string): Array<{ outcome: string; code: string | null; details: Record<string, unknown> }> {
  const db = new Database(join(dataDir, "hallmark.db"), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare("SELECT outcome, code, details FROM audit_log WHERE event = ? ORDER BY seq").all(event) as Array<{ outcome: string; code: string | null; details: string }>).map((r) => ({
      ...r,
      details: JSON.parse(r.details) as Record<string, unknown>,
    }));
  } finally {
    db.close();
  }
}

/** A join-token node of the server and an X.509-SVID of `spiffeId` fetched for it with `hallmark fetch x509`. */
async function workload(dir: string, url: string, name: string, nodeId: string, spiffeId: string, federatesWith: string): Promise<string> {
  const bundleFile = join(work.path, `${name}-bundle.pem`);
  writeFileSync(bundleFile, await ownBundle(dir));
  const { token } = (await adminOf(dir, "POST", "/admin/tokens", { spiffe_id: nodeId, ttl_seconds: 600 })).body as { token: string };
  const nodeDir = join(work.path, `${name}-node`);
  ok(await runCli(["attest", "--server", url, "--trust-bundle", bundleFile, "--join-token", token, "--out", nodeDir]));
  ok(await runCli(["entry", "create", "--data-dir", dir, "--parent-id", nodeId, "--spiffe-id", spiffeId, "--selector", "unix:uid:1000", "--federates-with", federatesWith]));
  const out = join(work.path, `${name}-workload`);
  ok(await runCli(["fetch", "x509", "--server", url, "--trust-bundle", join(nodeDir, "bundle.pem"), "--svid", join(nodeDir, "svid.pem"), "--key", join(nodeDir, "svid.key"), "--out", out]));
  return out;
}

const uriSan = (s: TLSSocket) => (s.getPeerCertificate().subjectaltname ?? "").split(", ").filter((x) => x.startsWith("URI:")).map((x) => x.slice(4));

/** Mutual TLS with Node's tls: each side presents its SVID and trusts only the given roots; answers the URIs each side saw. */
async function mutualTls(server: { dir: string; ca: string }, client: { dir: string; ca: string }): Promise<{ serverSaw: string[]; clientSaw: string[] }> {
  const read = (dir: string, f: string) => readFileSync(join(dir, f), "utf8");
  const tlsServer = createTlsServer({ cert: read(server.dir, "svid.pem"), key: read(server.dir, "svid.key"), ca: server.ca, requestCert: true, rejectUnauthorized: true });
  let serverSaw: string[] = [];
  tlsServer.on("secureConnection", (s) => {
    serverSaw = uriSan(s);
    s.end("hello");
  });
  await new Promise<void>((r) => tlsServer.listen(0, "127.0.0.1", r));
  try {
    const port = (tlsServer.address() as AddressInfo).port;
    const clientSaw = await new Promise<string[]>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port, cert: read(client.dir, "svid.pem"), key: read(client.dir, "svid.key"), ca: client.ca, checkServerIdentity: () => undefined }, () => {
        const saw = uriSan(s);
        s.on("data", () => {
          s.end();
          resolve(saw);
        });
      });
      s.on("error", reject);
    });
    return { serverSaw, clientSaw };
  } finally {
    await new Promise((r) => tlsServer.close(r));
  }
}

beforeAll(async () => {
  const pki = await makeWebPki(work.path);
  webRoot = pki.rootPem;
  const web = await pki.leaf("a-web");
  const configFile = join(work.path, "a.yaml");
  writeFileSync(configFile, `federation:\n  bundleEndpoint:\n    listen: 127.0.0.1:0\n    certFile: ${web.cert}\n    keyFile: ${web.key}\n`);
  a = await startTestServer({ dataDir: dirA, configFile });
  ({ server: b, url: bUrl } = await startForeignDomain(dirB, "partner.net"));

  // A bundle endpoint under our control, behind the same Web PKI: it answers whatever a test sets.
  const fakeTls = await pki.leaf("fake-web");
  fake = createServer({ cert: readFileSync(fakeTls.cert), key: readFileSync(fakeTls.key) }, (_req, res) => {
    res.writeHead(fakeAnswer.status, { "content-type": "application/json", ...fakeAnswer.headers });
    res.end(fakeAnswer.body);
  });
  await new Promise<void>((r) => fake.listen(0, "127.0.0.1", r));
  fakeUrl = `https://127.0.0.1:${(fake.address() as AddressInfo).port}/bundle`;
}, 60_000);

afterAll(async () => {
  await new Promise((r) => (fake ? fake.close(r) : r(undefined)));
  await b?.stop();
  await a?.destroy();
  work.remove();
});

describe("two trust domains federating", () => {
  let workloadA: string;
  let workloadB: string;

  it("example.org federates with partner.net over https_spiffe, bootstrapped with the bundle given out of band", async () => {
    const initial = join(work.path, "partner-initial.json");
    writeFileSync(initial, ok(await onB(["bundle", "show", "--format", "spiffe"])));
    const created = JSON.parse(
      ok(await onA(["federation", "create", "--trust-domain", "partner.net", "--bundle-endpoint", `${bUrl}/.well-known/spiffe-bundle`, "--profile", "https_spiffe",
        "--endpoint-spiffe-id", "spiffe://partner.net/hallmark/server", "--trust-bundle-file", initial, "--json"])),
    ) as { has_bundle: boolean; bundle_sequence: number };
    expect(created.has_bundle).toBe(true);
    const refreshed = JSON.parse(ok(await onA(["federation", "refresh", "partner.net", "--json"]))) as { outcome: string; sequence: number };
    // Fetched over TLS authenticated by that bundle: the same bundle, nothing to adopt.
    expect(refreshed).toMatchObject({ outcome: "unchanged", sequence: created.bundle_sequence });
    expect(ok(await onA(["federation", "show", "partner.net"]))).toMatch(/last refresh: +\S+: unchanged/);
  });

  it("partner.net federates with example.org over https_web, its endpoint authenticated by --web-roots", async () => {
    ok(await onB(["federation", "create", "--trust-domain", "example.org", "--bundle-endpoint", a.webBundleUrl!, "--profile", "https_web", "--web-roots", webRoot]));
    const r = JSON.parse(ok(await onB(["federation", "refresh", "example.org", "--json"]))) as { outcome: string };
    // "unchanged" when the background refresh (due at once after create) got there first.
    expect(r.outcome).toMatch(/^(updated|unchanged)$/);
    // Hallmark's own bundle, judged by the same code, is what partner.net now holds for example.org.
    expect(ok(await onB(["bundle", "show", "--trust-domain", "example.org"]))).toBe((await ownBundle(dirA)));
    const adopted = auditOf(dirB, "federation_bundle").filter((x) => x.outcome === "success");
    expect(adopted.at(-1)?.details).toMatchObject({ trustDomain: "example.org", endpoint: a.webBundleUrl });
  });

  it("a workload in each domain gets the other's bundle through the node API and `hallmark fetch x509`", async () => {
    workloadA = await workload(dirA, a.url, "a", "spiffe://example.org/node/a", "spiffe://example.org/client", "partner.net");
    workloadB = await workload(dirB, bUrl, "b", "spiffe://partner.net/node/b", "spiffe://partner.net/server", "example.org");
    expect(readFileSync(join(workloadA, "federated", "partner.net.pem"), "utf8")).toBe((await ownBundle(dirB)));
    expect(readFileSync(join(workloadB, "federated", "example.org.pem"), "utf8")).toBe((await ownBundle(dirA)));
    expect(ok(await onA(["entry", "list"]))).toContain("federates-with=partner.net");
    const entries = (await adminOf(dirB, "GET", "/admin/entries")).body.entries as Array<{ federates_with: string[] }>;
    expect(entries.map((e) => e.federates_with)).toEqual([["example.org"]]);
  });

  it("the two workloads complete mutual TLS across the domains with their SVIDs and federated bundles", async () => {
    const fedA = readFileSync(join(workloadA, "federated", "partner.net.pem"), "utf8");
    const fedB = readFileSync(join(workloadB, "federated", "example.org.pem"), "utf8");
    const r = await mutualTls({ dir: workloadB, ca: fedB }, { dir: workloadA, ca: fedA });
    expect(r.clientSaw).toEqual(["spiffe://partner.net/server"]);
    expect(r.serverSaw).toEqual(["spiffe://example.org/client"]);
    // Without the federated bundle (only its own), the client refuses partner.net's certificate.
    await expect(mutualTls({ dir: workloadB, ca: fedB }, { dir: workloadA, ca: readFileSync(join(workloadA, "bundle.pem"), "utf8") })).rejects.toThrow();
  });

  it("a rotation in partner.net reaches example.org before the new key signs", async () => {
    const before = pemBlocks(String((await adminA("GET", "/admin/federations/partner.net/bundle")).body.bundle_pem));
    ok(await onB(["ca", "rotate", "--kind", "x509", "--step", "prepare"]));
    const r = JSON.parse(ok(await onA(["federation", "refresh", "partner.net", "--json"]))) as { outcome: string; sequence: number; previous_sequence: number };
    // The server's own refresh loop may have fetched the new bundle first (then this refresh is
    // "unchanged", as seen in CI for the same race elsewhere); what matters is what A holds.
    expect(r.outcome).toMatch(/^(updated|unchanged)$/);
    if (r.outcome === "updated") expect(r.sequence).toBeGreaterThan(r.previous_sequence);
    const held = pemBlocks(ok(await onA(["bundle", "show", "--trust-domain", "partner.net"])));
    expect(held.length).toBe(before.length + 1);
    ok(await onB(["ca", "rotate", "--kind", "x509", "--step", "activate"]));
    // An SVID signed by the new key: it chains to a certificate example.org already held.
    const out = join(work.path, "b-after-rotation");
    const nodeDir = join(work.path, "b-node");
    ok(await runCli(["fetch", "x509", "--server", bUrl, "--trust-bundle", join(nodeDir, "bundle.pem"), "--svid", join(nodeDir, "svid.pem"), "--key", join(nodeDir, "svid.key"), "--out", out]));
    const chain = pemBlocks(readFileSync(join(out, "svid.pem"), "utf8")).map((d) => new X509Certificate(d));
    const top = chain.at(-1)!;
    const newRoot = held.map((d) => new X509Certificate(d)).find((c) => top.checkIssued(c) && top.verify(c.publicKey));
    expect(newRoot).toBeDefined();
    expect(before.some((d) => new X509Certificate(d).fingerprint256 === newRoot!.fingerprint256)).toBe(false);
    // And the https_spiffe endpoint, now presenting an SVID of the new key, is still authenticated.
    expect((await adminA("POST", "/admin/federations/partner.net/refresh")).body.outcome).toMatch(/updated|unchanged/);
  });
});

describe("refusals: each with its code and audit record, the last good bundle kept", () => {
  let good: string;

  /** A forced refresh refused with `code` (problem+json over the admin socket), and its audit record. */
  const refreshRefused = async (td: string, code: string) => {
    const r = await adminA("POST", `/admin/federations/${td}/refresh`);
    expect(r.body.code).toBe(code);
    expect(r.status).toBeLessThan(500);
    const last = auditOf(dirA, "federation_bundle").at(-1)!;
    expect(last).toMatchObject({ outcome: "refused", code, details: { trustDomain: td } });
  };
  const held = async (td: string) => (await adminA("GET", `/admin/federations/${td}/bundle`)).body.spiffe_bundle;

  beforeAll(async () => {
    const ca = await testCert({ name: "c.test", extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://c.test" }])] });
    good = JSON.stringify(spiffeBundleJwks({ x509Authorities: [ca.der], jwtAuthorities: [], sequence: 5, refreshHintSeconds: 3600 }));
    fakeAnswer = { status: 200, body: good };
    ok(await onA(["federation", "create", "--trust-domain", "c.test", "--bundle-endpoint", fakeUrl, "--profile", "https_web", "--web-roots", webRoot]));
    // The server's own refresh loop may fetch the new relationship first (then this one is
    // "unchanged"); either way the good bundle is the one held before the refusals start.
    expect((await adminA("POST", "/admin/federations/c.test/refresh")).body.outcome).toMatch(/^(updated|unchanged)$/);
    expect(await held("c.test")).toEqual(JSON.parse(good));
  });

  it("wrong trust domain: the endpoint serves partner.net's bundle under the name c.test", async () => {
    fakeAnswer = { status: 200, body: ok(await onB(["bundle", "show", "--format", "spiffe"])) };
    await refreshRefused("c.test", "federation_wrong_trust_domain");
    expect(await held("c.test")).toEqual(JSON.parse(good));
    // On the CLI: one line with the code, exit 1.
    const cli = await onA(["federation", "refresh", "c.test"]);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/^hallmark: federation_wrong_trust_domain: .*spiffe:\/\/|^hallmark: federation_wrong_trust_domain: /);
  });

  it("sequence going backwards, and the same sequence with other keys", async () => {
    const older = JSON.parse(good) as Record<string, unknown>;
    fakeAnswer = { status: 200, body: JSON.stringify({ ...older, spiffe_sequence: 4 }) };
    await refreshRefused("c.test", "federation_sequence_regressed");
    fakeAnswer = { status: 200, body: JSON.stringify({ ...older, keys: [] }) };
    await refreshRefused("c.test", "federation_sequence_regressed");
    expect(await held("c.test")).toEqual(JSON.parse(good));
  });

  it("oversized, malformed, and a redirect", async () => {
    fakeAnswer = { status: 200, body: Buffer.alloc(MAX_BUNDLE_BYTES + 10, 0x20) };
    await refreshRefused("c.test", "federation_bundle_too_large");
    fakeAnswer = { status: 200, body: "<html>not a bundle</html>" };
    await refreshRefused("c.test", "federation_bundle_malformed");
    fakeAnswer = { status: 302, body: "", headers: { location: "https://elsewhere.example/bundle" } };
    await refreshRefused("c.test", "federation_redirect_refused");
    expect(await held("c.test")).toEqual(JSON.parse(good));
    expect((await adminA("GET", "/admin/federations/c.test")).body.last_outcome).toBe("federation_redirect_refused");
  });

  it("endpoint certificate not matching: https_web with roots that did not issue it", async () => {
    fakeAnswer = { status: 200, body: good };
    const otherRoots = join(work.path, "other-roots.pem");
    writeFileSync(otherRoots, (await ownBundle(dirB)));
    ok(await onA(["federation", "update", "c.test", "--web-roots", otherRoots]));
    expect((await adminA("GET", "/admin/federations/c.test")).body.web_roots).toMatch(/^configured \(\d+ certificates\)$/);
    await refreshRefused("c.test", "federation_endpoint_untrusted");
    expect(await held("c.test")).toEqual(JSON.parse(good));
  });

  it("endpoint SPIFFE ID mismatch: https_spiffe expecting another ID than the endpoint's SVID carries", async () => {
    const before = await held("partner.net");
    expect((await adminA("POST", "/admin/federations/partner.net", { endpoint_spiffe_id: "spiffe://partner.net/spire/server" })).status).toBe(200);
    await refreshRefused("partner.net", "federation_endpoint_id_mismatch");
    expect(await held("partner.net")).toEqual(before);
    expect((await adminA("POST", "/admin/federations/partner.net", { endpoint_spiffe_id: "spiffe://partner.net/hallmark/server" })).status).toBe(200);
    expect((await adminA("POST", "/admin/federations/partner.net/refresh")).body.outcome).toMatch(/updated|unchanged/);
  });

  it("administration refusals: own trust domain, https_spiffe without a bootstrap bundle, an entry federating with an unknown domain", async () => {
    const create = (body: Record<string, unknown>) => adminA("POST", "/admin/federations", body);
    expect((await create({ trust_domain: "example.org", bundle_endpoint_url: fakeUrl, profile: "https_web" })).body.code).toBe("federation_own_trust_domain");
    const noBundle = await create({ trust_domain: "d.test", bundle_endpoint_url: fakeUrl, profile: "https_spiffe", endpoint_spiffe_id: "spiffe://d.test/server" });
    expect(noBundle.body.code).toBe("federation_invalid");
    expect((await create({ trust_domain: "d.test", bundle_endpoint_url: "http://127.0.0.1/bundle", profile: "https_web" })).body.code).toBe("federation_invalid");
    const entry = await adminA("POST", "/admin/entries", { parent_id: "spiffe://example.org/node/a", spiffe_id: "spiffe://example.org/x", selectors: ["unix:uid:1"], federates_with: ["nowhere.test"] });
    expect(entry.body.code).toBe("federation_not_found");
    expect(((await adminA("GET", "/admin/federations")).body.federations as Array<{ trust_domain: string }>).map((f) => f.trust_domain)).toEqual(["c.test", "partner.net"]);
    ok(await onA(["federation", "delete", "c.test"]));
    expect((await adminA("GET", "/admin/federations/c.test/bundle")).body.code).toBe("federation_not_found");
    expect(auditOf(dirA, "federation_delete").map((x) => x.details.trustDomain)).toEqual(["c.test"]);
  });
});
