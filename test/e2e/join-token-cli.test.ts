import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { createLocalJWKSet, jwtVerify, decodeProtectedHeader } from "jose";
import { runCli, run } from "../helpers/cli.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";
import { checkX509SvidConformance } from "../../src/issuer/conformance.js";
import { TrustDomain } from "../../src/spiffe/id.js";

let server: TestServer;
const work = tempDir("cli");
const nodeDir = join(work.path, "node");
const workloadDir = join(work.path, "workload");
const bundlePath = join(work.path, "bundle.pem");
const td = TrustDomain.parse("example.org");
const NODE_ID = "spiffe://example.org/node/n1";
const WORKLOAD_ID = "spiffe://example.org/workload/w1";

const admin = (...args: string[]) => runCli([...args, "--data-dir", server.dataDir]);
const asNode = () => ["--server", server.url, "--svid", join(nodeDir, "svid.pem"), "--key", join(nodeDir, "svid.key"), "--trust-bundle", bundlePath];

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.destroy();
  work.remove();
});

describe("join-token quick start through the CLI", () => {
  let token: string;

  it("creates a join token and prints the bundle", async () => {
    const t = await admin("token", "create", "--spiffe-id", NODE_ID, "--ttl", "10m");
    expect(t.stderr).toBe("");
    expect(t.code).toBe(0);
    token = t.stdout.trim();
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const b = await admin("bundle", "show", "--format", "pem");
    expect(b.code).toBe(0);
    expect(b.stdout).toContain("-----BEGIN CERTIFICATE-----");
    const { writeFileSync } = await import("node:fs");
    writeFileSync(bundlePath, b.stdout);
  });

  it("attests with the token and writes an SVID that openssl verifies", async () => {
    const r = await runCli(["attest", "--server", server.url, "--trust-bundle", bundlePath, "--join-token", token, "--out", nodeDir]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(statSync(join(nodeDir, "svid.key")).mode & 0o777).toBe(0o600);
    const v = await run("openssl", ["verify", "-CAfile", join(nodeDir, "bundle.pem"), "-untrusted", join(nodeDir, "svid.pem"), join(nodeDir, "svid.pem")]);
    expect(v.stdout).toContain(": OK");
    const leaf = new X509Certificate(readFileSync(join(nodeDir, "svid.pem")));
    expect(leaf.subjectAltName).toBe(`URI:${NODE_ID}`);
    checkX509SvidConformance(leaf.raw, { trustDomain: td });
  });

  it("refuses the same token a second time, with its code and a non-zero exit", async () => {
    const r = await runCli(["attest", "--server", server.url, "--trust-bundle", bundlePath, "--join-token", token, "--out", join(work.path, "again")]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^hallmark: join_token_used: /);
    expect(r.stderr.split("\n").filter(Boolean)).toHaveLength(1);
  });

  it("fetches a workload X.509-SVID for an entry parented to the node", async () => {
    const e = await admin("entry", "create", "--parent-id", NODE_ID, "--spiffe-id", WORKLOAD_ID, "--selector", "unix:uid:1000", "--json");
    expect(e.code).toBe(0);
    expect(JSON.parse(e.stdout).spiffe_id).toBe(WORKLOAD_ID);
    const r = await runCli(["fetch", "x509", ...asNode(), "--out", workloadDir]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const v = await run("openssl", ["verify", "-CAfile", bundlePath, "-untrusted", join(workloadDir, "svid.pem"), join(workloadDir, "svid.pem")]);
    expect(v.stdout).toContain(": OK");
    const leaf = new X509Certificate(readFileSync(join(workloadDir, "svid.pem")));
    expect(leaf.subjectAltName).toBe(`URI:${WORKLOAD_ID}`);
    checkX509SvidConformance(leaf.raw, { trustDomain: td });
  });

  it("refuses an identity the node is not entitled to", async () => {
    const r = await runCli(["fetch", "x509", ...asNode(), "--spiffe-id", "spiffe://example.org/workload/other", "--out", join(work.path, "x")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^hallmark: not_entitled: /);
  });

  it("fetches a JWT-SVID that jose verifies against the served JWKS and the SPIFFE bundle", async () => {
    const r = await runCli(["fetch", "jwt", ...asNode(), "--audience", "https://api.example.org", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const { token: jwt } = JSON.parse(r.stdout) as { token: string };
    const header = decodeProtectedHeader(jwt);
    expect(header.kid).toBeTruthy();
    expect(["ES256", "ES384", "RS256", "PS256"]).toContain(header.alg);

    const wellKnown = await fetchJson(`${server.url}/.well-known/openid-configuration`);
    const jwks = await fetchJson(String(wellKnown.jwks_uri));
    const fromOidc = await jwtVerify(jwt, createLocalJWKSet(jwks as never), { audience: "https://api.example.org" });
    expect(fromOidc.payload.sub).toBe(WORKLOAD_ID);
    expect(typeof fromOidc.payload.exp).toBe("number");
    expect(typeof fromOidc.payload.iat).toBe("number");

    const b = await admin("bundle", "show", "--format", "spiffe");
    const bundle = JSON.parse(b.stdout) as { keys: Array<Record<string, unknown>>; spiffe_sequence: number; spiffe_refresh_hint: number };
    expect(bundle.spiffe_sequence).toBeGreaterThan(0);
    expect(bundle.spiffe_refresh_hint).toBeGreaterThan(0);
    const jwtKeys = bundle.keys.filter((k) => k.use === "jwt-svid");
    expect(jwtKeys.length).toBeGreaterThan(0);
    // `use: jwt-svid` is SPIFFE's, not JOSE's: a SPIFFE-aware verifier selects by it, then verifies by kid.
    const joseKeys = jwtKeys.map(({ use: _use, ...k }) => k);
    const fromBundle = await jwtVerify(jwt, createLocalJWKSet({ keys: joseKeys } as never), { audience: "https://api.example.org" });
    expect(fromBundle.payload.sub).toBe(WORKLOAD_ID);
    expect(bundle.keys.filter((k) => k.use === "x509-svid").every((k) => Array.isArray(k.x5c) && (k.x5c as unknown[]).length === 1)).toBe(true);
  });

  it("keeps --trust-bundle current through a CA rotation: a stale copy verifies the server and is brought up to date", async () => {
    const certs = (file: string) => (readFileSync(file, "utf8").match(/-----BEGIN CERTIFICATE-----/g) ?? []).length;
    const stalePath = join(work.path, "stale-bundle.pem");
    writeFileSync(stalePath, readFileSync(bundlePath));
    expect(certs(stalePath)).toBe(1);
    expect((await admin("ca", "rotate", "--kind", "x509", "--step", "prepare")).code).toBe(0);
    // The next node call brings the prepared root into the file it was given.
    expect((await runCli(["fetch", "jwt", ...asNode(), "--audience", "https://api.example.org"])).code).toBe(0);
    expect(certs(bundlePath)).toBe(2);
    expect((await admin("ca", "rotate", "--kind", "x509", "--step", "activate")).code).toBe(0);
    // The stale copy knows only the old root; the server's chain carries the new CA cross-signed by it.
    const stale = ["--server", server.url, "--svid", join(nodeDir, "svid.pem"), "--key", join(nodeDir, "svid.key"), "--trust-bundle", stalePath];
    const r = await runCli(["fetch", "x509", ...stale, "--out", join(work.path, "after-rotation")]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(readFileSync(stalePath, "utf8")).toBe(readFileSync(bundlePath, "utf8"));
    // Nothing to retire yet, and retire says why: which key waits for which expiry.
    const retire = await admin("ca", "rotate", "--kind", "x509", "--step", "retire");
    expect(retire.code).toBe(0);
    expect(retire.stdout).toMatch(/^previous x509 key [0-9a-f-]{36} stays published until its last SVID expires at \d{4}-/);
  });

  it("lists nodes and entries, verifies the audit chain, then evicts the node", async () => {
    const nodes = await admin("node", "list", "--json");
    expect(JSON.parse(nodes.stdout).nodes.map((n: { spiffe_id: string }) => n.spiffe_id)).toContain(NODE_ID);
    const entries = await admin("entry", "list", "--parent-id", NODE_ID, "--json");
    expect(JSON.parse(entries.stdout).entries).toHaveLength(1);
    const audit = await admin("audit", "verify");
    expect(audit.code).toBe(0);
    expect(audit.stdout).toMatch(/audit log intact: \d+ records/);
    // A checkpoint file: written on the first run, checked and advanced on the next.
    const checkpoint = join(work.path, "audit.checkpoint");
    expect((await admin("audit", "verify", "--checkpoint", checkpoint)).code).toBe(0);
    const first = JSON.parse(readFileSync(checkpoint, "utf8")) as { seq: number; hash: string };
    expect(first.seq).toBeGreaterThan(0);
    const later = await admin("token", "create", "--spiffe-id", "spiffe://example.org/node/later", "--ttl", "1m"); // one more record
    expect(later.code, later.stderr).toBe(0);
    const again = await admin("audit", "verify", "--checkpoint", checkpoint);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`checkpoint record ${first.seq} still in place`);
    // A checkpoint past the end of the log is what a cut-off tail looks like.
    writeFileSync(checkpoint, JSON.stringify({ seq: first.seq + 1000, hash: first.hash }));
    const cut = await admin("audit", "verify", "--checkpoint", checkpoint);
    expect(cut.code).toBe(1);
    expect(cut.stdout).toMatch(/audit log BROKEN at record \d+: checkpoint_missing/);
    expect(JSON.parse(readFileSync(checkpoint, "utf8")).seq).toBe(first.seq + 1000);
    writeFileSync(checkpoint, "not json");
    const bad = await admin("audit", "verify", "--checkpoint", checkpoint);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    expect((await admin("node", "evict", "--spiffe-id", NODE_ID)).code).toBe(0);
    const r = await runCli(["fetch", "x509", ...asNode(), "--out", join(work.path, "y")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^hallmark: node_evicted: /);
  });

  it("bootstraps without a trust bundle (insecure, said on stderr), as the quick start allows", async () => {
    const t = await admin("token", "create", "--spiffe-id", "spiffe://example.org/node/insecure", "--ttl", "1m");
    expect(t.code, t.stderr).toBe(0);
    const out = join(work.path, "insecure");
    const r = await runCli(["attest", "--server", server.url, "--join-token", t.stdout.trim(), "--out", out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/insecure bootstrap/);
    const v = await run("openssl", ["verify", "-CAfile", join(out, "bundle.pem"), "-untrusted", join(out, "svid.pem"), join(out, "svid.pem")]);
    expect(v.stdout).toContain(": OK");
  });

  it("answers usage errors with exit 2 and one line", async () => {
    const r = await runCli(["token", "create", "--bogus"]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    const h = await runCli(["entry", "create", "--help"]);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain("--parent-id");
  });
});

async function fetchJson(url: string): Promise<Record<string, unknown>> {
  const { request } = await import("node:https");
  return new Promise((resolve, reject) => {
    request(url, { ca: readFileSync(bundlePath), checkServerIdentity: () => undefined }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve(JSON.parse(body)));
    })
      .on("error", reject)
      .end();
  });
}
