import { X509Certificate } from "node:crypto";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { connect } from "node:tls";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pemBlocks } from "../../src/pki/pem.js";
import { run, runCli } from "../helpers/cli.js";
import { httpsRaw } from "../helpers/https.js";
import { type TestServer, startTestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * The SPIFFE federation bundle endpoint under both profiles (SPIFFE Federation §5.2): https_web on
 * its own listener with a Web PKI certificate (a private "public" CA made by openssl stands in for
 * Let's Encrypt), and https_spiffe on the main listener, whose certificate is the server's SVID.
 */
const work = tempDir("federation");
const webRoot = join(work.path, "web-root.pem");
const webCert = join(work.path, "web.pem");
const webKey = join(work.path, "web.key");

async function openssl(args: string[]): Promise<void> {
  const r = await run("openssl", args);
  if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
}

/** A leaf for localhost and 127.0.0.1 under the test web root, written over certFile/keyFile atomically. */
async function issueWebCert(name: string): Promise<void> {
  const key = join(work.path, `${name}.key`);
  const cert = join(work.path, `${name}.pem`);
  await openssl([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
    "-subj", "/CN=localhost", "-days", "2", "-CA", webRoot, "-CAkey", join(work.path, "web-root.key"),
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE",
    "-addext", "extendedKeyUsage=serverAuth",
  ]);
  renameSync(key, webKey);
  renameSync(cert, webCert);
}

/** GET with Node's default server verification (chain to `ca`, SAN matches the host): an ordinary https_web client. */
function webGet(url: string, ca: string): Promise<{ status: number; contentType: string; text: string; peerFingerprint: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      const peerFingerprint = (res.socket as import("node:tls").TLSSocket).getPeerCertificate().fingerprint256;
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers["content-type"]), text: Buffer.concat(chunks).toString("utf8"), peerFingerprint }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** The certificate a TLS listener presents right now, unverified: the tests compare it themselves. */
function presentedCertificate(url: string): Promise<X509Certificate> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: u.hostname, port: Number(u.port), rejectUnauthorized: false, servername: "localhost" }, () => {
      resolve(new X509Certificate(s.getPeerCertificate().raw));
      s.end();
    });
    s.on("error", reject);
  });
}
const presentedFingerprint = async (url: string) => (await presentedCertificate(url)).fingerprint256;

const fingerprintOfFile = (path: string) => new X509Certificate(pemBlocks(readFileSync(path, "utf8"))[0]!).fingerprint256;

let server: TestServer;
let webBundleUrl: string;
let rootPem: string;

beforeAll(async () => {
  await openssl([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", join(work.path, "web-root.key"),
    "-out", webRoot, "-subj", "/CN=Hallmark test Web PKI root", "-days", "2",
  ]);
  rootPem = readFileSync(webRoot, "utf8");
  await issueWebCert("first");
  const configFile = join(work.path, "hallmark.yaml");
  writeFileSync(configFile, `federation:\n  bundleEndpoint:\n    listen: 127.0.0.1:0\n    certFile: ${webCert}\n    keyFile: ${webKey}\n    reloadInterval: 1s\n`);
  server = await startTestServer({ configFile });
  webBundleUrl = server.webBundleUrl!;
}, 60_000);

afterAll(async () => {
  await server?.destroy();
  work.remove();
});

describe("SPIFFE federation bundle endpoint", () => {
  it("https_web: serves the SPIFFE bundle under the Web PKI certificate, verified as any HTTPS client would", async () => {
    expect(webBundleUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/\.well-known\/spiffe-bundle$/);
    const r = await webGet(webBundleUrl, rootPem);
    expect(r.status).toBe(200);
    expect(r.contentType).toMatch(/^application\/json/);
    expect(r.peerFingerprint).toBe(fingerprintOfFile(webCert));
    const bundle = JSON.parse(r.text) as { keys: Array<{ use: string; x5c?: string[] }>; spiffe_sequence: number };
    const fromAdmin = JSON.parse((await runCli(["bundle", "show", "--format", "spiffe", "--data-dir", server.dataDir])).stdout) as unknown;
    expect(bundle).toEqual(fromAdmin);
    // The x509-svid keys are the CA certificates of the trust domain (SPIFFE Trust Domain and Bundle §4).
    const caDer = bundle.keys.filter((k) => k.use === "x509-svid").map((k) => k.x5c![0]);
    const adminPem = (await runCli(["bundle", "show", "--format", "pem", "--data-dir", server.dataDir])).stdout;
    expect(caDer).toEqual(pemBlocks(adminPem).map((d) => Buffer.from(d).toString("base64")));
    expect(bundle.keys.some((k) => k.use === "jwt-svid")).toBe(true);
  });

  it("https_web: openssl verifies the endpoint's chain and host name, and no client certificate is asked for", async () => {
    const port = new URL(webBundleUrl).port;
    const r = await run("sh", [
      "-c",
      `openssl s_client -connect 127.0.0.1:${port} -servername localhost -verify_hostname localhost -CAfile ${webRoot} -verify_return_error -brief </dev/null 2>&1`,
    ]);
    expect(r.stdout).toMatch(/Verification: OK/);
    expect(r.stdout).not.toMatch(/client certificate|Requested Signature Algorithms/i);
  });

  it("https_web: serves only the well-known documents; node and attestation APIs are not on it", async () => {
    const base = webBundleUrl.replace("/.well-known/spiffe-bundle", "");
    const oidc = await httpsRaw(`${base}/.well-known/openid-configuration`, { ca: rootPem });
    expect(oidc.status).toBe(200);
    const jwks = await httpsRaw(`${base}/.well-known/jwks.json`, { ca: rootPem });
    expect((jwks.body as { keys: unknown[] }).keys.length).toBeGreaterThan(0);
    for (const [method, path] of [["POST", "/v1/attest/sessions"], ["POST", "/v1/svids/x509"], ["GET", "/v1/bundle"], ["GET", "/metrics"]] as const) {
      const r = await httpsRaw(`${base}${path}`, { method, ca: rootPem, body: "{}", headers: { "content-type": "application/json" } });
      expect(r.status, `${method} ${path}`).toBe(404);
      expect(r.contentType).toMatch(/^application\/problem\+json/);
    }
  });

  it("https_spiffe: the main listener serves the same bundle under the server's X509-SVID, without client auth", async () => {
    const bundlePem = (await runCli(["bundle", "show", "--format", "pem", "--data-dir", server.dataDir])).stdout;
    const r = await httpsRaw(`${server.url}/.well-known/spiffe-bundle`, { ca: bundlePem });
    expect(r.status).toBe(200);
    expect(r.contentType).toMatch(/^application\/json/);
    expect(r.body).toEqual(JSON.parse((await webGet(webBundleUrl, rootPem)).text));
    const svid = await presentedCertificate(server.url);
    expect(svid.subjectAltName).toContain(`URI:spiffe://${server.config.trustDomain}/hallmark/server`);
  });

  it("picks up a renewed Web PKI certificate without a restart", async () => {
    const before = await presentedFingerprint(webBundleUrl);
    await issueWebCert("second");
    const expected = fingerprintOfFile(webCert);
    expect(expected).not.toBe(before);
    // The files are polled every second (reloadInterval: 1s); wait for the swap, up to 20 s.
    let now = before;
    for (let i = 0; i < 80 && now !== expected; i++) {
      await new Promise((r) => setTimeout(r, 250));
      now = await presentedFingerprint(webBundleUrl);
    }
    expect(now).toBe(expected);
    expect((await webGet(webBundleUrl, rootPem)).status).toBe(200);
  });

  it("keeps serving the previous certificate when a renewal is unreadable", async () => {
    const before = await presentedFingerprint(webBundleUrl);
    writeFileSync(webKey, "not a key\n");
    // Two reload periods pass; the listener must still present the last good certificate.
    await new Promise((r) => setTimeout(r, 2500));
    expect(await presentedFingerprint(webBundleUrl)).toBe(before);
    expect((await webGet(webBundleUrl, rootPem)).status).toBe(200);
  });
});

describe("federation.bundleEndpoint configuration refusals", () => {
  const start = async (yaml: string) => {
    const dir = tempDir("federation-bad");
    const file = join(dir.path, "hallmark.yaml");
    writeFileSync(file, yaml);
    try {
      return await runCli(["server", "--config", file, "--data-dir", join(dir.path, "data"), "--listen", "127.0.0.1:0"]);
    } finally {
      dir.remove();
    }
  };

  it("refuses a key that is not the certificate's, in one line naming the files and never their content", async () => {
    const otherKey = join(work.path, "other.key");
    await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", otherKey]);
    const r = await start(`federation:\n  bundleEndpoint:\n    listen: 127.0.0.1:0\n    certFile: ${webCert}\n    keyFile: ${otherKey}\n`);
    expect(r.code).not.toBe(0);
    const lines = r.stderr.trim().split("\n").filter((l) => l.startsWith("hallmark:"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^hallmark: config_invalid: federation\.bundleEndpoint: the key in .*other\.key is not the key of the first certificate/);
    expect(r.stderr).not.toContain(readFileSync(otherKey, "utf8").split("\n")[1]!);
  });

  it("refuses a missing certificate file and an unknown field", async () => {
    const missing = await start(`federation:\n  bundleEndpoint:\n    listen: 127.0.0.1:0\n    certFile: /nonexistent/web.pem\n    keyFile: ${webKey}\n`);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/hallmark: config_invalid: federation\.bundleEndpoint\.certFile: cannot read \/nonexistent\/web\.pem/);
    const unknown = await start(`federation:\n  bundleEndpoint:\n    listen: 127.0.0.1:0\n    certFile: ${webCert}\n    keyFile: ${webKey}\n    acme: true\n`);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/federation\.bundleEndpoint/);
  });
});
