import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Server, connect, createServer } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { run, runCli } from "../helpers/cli.js";
import { type TestServer, startTestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * The TLS policy of every listener (src/api/tls-policy.ts), probed from outside with OpenSSL's
 * s_client: TLS 1.2 offers AEAD ECDHE suites only, renegotiation is refused, and the policy
 * survives the server swapping a renewed SVID into the live listener. A plain Node TLS server on
 * Node's defaults is the control: it accepts what ours refuses, so the probes can tell.
 * And the server's SVID names the address it listens on, so curl reaches https://127.0.0.1.
 */
const HAVE_CURL = spawnSync("sh", ["-c", "command -v curl"]).status === 0;
if (!HAVE_CURL) console.warn("tls-policy: the curl test is skipped: curl is not installed (Node's own host check still runs)");

const work = tempDir("tls-policy");
const webKey = join(work.path, "web.key");
const webCert = join(work.path, "web.pem");
let server: TestServer;
let control: Server;
let bundlePath: string;
const ports: Record<"main" | "web" | "control", number> = { main: 0, web: 0, control: 0 };

async function openssl(args: string[]): Promise<void> {
  const r = await run("openssl", args);
  if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
}

/** One s_client handshake at TLS 1.2 with one offered suite: the suite agreed, or undefined when refused. */
async function agreedTls12Suite(port: number, suite: string): Promise<string | undefined> {
  const r = await run("sh", ["-c", `openssl s_client -connect 127.0.0.1:${port} -tls1_2 -cipher ${suite} -brief </dev/null 2>&1`]);
  return r.code === 0 ? /Ciphersuite: (\S+)/.exec(r.stdout)?.[1] : undefined;
}

/**
 * s_client's `R` command asks for a renegotiation of the TLS 1.2 session; the input stays open a
 * moment so the answer arrives before s_client reads end-of-file and leaves.
 */
async function renegotiation(port: number): Promise<{ code: number; output: string }> {
  const r = await run("sh", ["-c", `(printf 'R\\n'; sleep 1) | openssl s_client -connect 127.0.0.1:${port} -tls1_2 2>&1`]);
  return { code: r.code, output: r.stdout };
}

const presentedSerial = (port: number) =>
  new Promise<string>((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().serialNumber);
      s.end();
    });
    s.on("error", reject);
  });

beforeAll(async () => {
  await openssl([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", webKey, "-out", webCert,
    "-subj", "/CN=localhost", "-days", "2", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ]);
  const configFile = join(work.path, "hallmark.yaml");
  writeFileSync(
    configFile,
    [
      "tls:",
      "  dnsNames: [hallmark.test]",
      "  ipAddresses: [192.0.2.10, '2001:db8::10']",
      "federation:",
      "  bundleEndpoint:",
      "    listen: 127.0.0.1:0",
      `    certFile: ${webCert}`,
      `    keyFile: ${webKey}`,
      "",
    ].join("\n"),
  );
  server = await startTestServer({ configFile });
  ports.main = Number(new URL(server.url).port);
  ports.web = Number(new URL(server.webBundleUrl!).port);
  bundlePath = join(work.path, "bundle.pem");
  writeFileSync(bundlePath, (expectOk(await adminRequest(server.adminSocket, "GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem);
  // The control: the same kind of key and certificate, Node's default TLS options.
  control = createServer({ key: readFileSync(webKey), cert: readFileSync(webCert) }, (s) => s.on("data", () => undefined));
  await new Promise<void>((r) => control.listen(0, "127.0.0.1", r));
  ports.control = (control.address() as { port: number }).port;
}, 60_000);

afterAll(async () => {
  control?.close();
  await server?.destroy();
  work.remove();
});

describe("TLS policy of every listener", () => {
  it("TLS 1.2 agrees only AEAD ECDHE suites: CBC, CCM8 and ARIA are refused, on both listeners", async () => {
    for (const port of [ports.main, ports.web]) {
      for (const weak of ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-CCM8", "ECDHE-ECDSA-ARIA128-GCM-SHA256"]) {
        expect({ port, weak, agreed: await agreedTls12Suite(port, weak) }).toEqual({ port, weak, agreed: undefined });
      }
      expect(await agreedTls12Suite(port, "ECDHE-ECDSA-AES128-GCM-SHA256")).toBe("ECDHE-ECDSA-AES128-GCM-SHA256");
      expect(await agreedTls12Suite(port, "ECDHE-ECDSA-CHACHA20-POLY1305")).toBe("ECDHE-ECDSA-CHACHA20-POLY1305");
      const tls13 = await run("sh", ["-c", `openssl s_client -connect 127.0.0.1:${port} -tls1_3 -brief </dev/null 2>&1`]);
      expect(tls13.stdout).toMatch(/Protocol version: TLSv1\.3/);
    }
    // Node's defaults agree the CBC suite: the probe does see the difference.
    expect(await agreedTls12Suite(ports.control, "ECDHE-ECDSA-AES128-SHA")).toBe("ECDHE-ECDSA-AES128-SHA");
  });

  it("refuses client-initiated renegotiation on both listeners", async () => {
    for (const port of [ports.main, ports.web]) {
      const r = await renegotiation(port);
      expect(r.output).toMatch(/RENEGOTIATING/);
      expect(r.output).toMatch(/no renegotiation/);
      expect(r.code).not.toBe(0);
    }
    const c = await renegotiation(ports.control);
    expect(c.output).toMatch(/RENEGOTIATING/);
    expect(c.output).not.toMatch(/no renegotiation/);
  });

  it("keeps the policy after a renewed SVID is swapped into the live listener", async () => {
    const before = await presentedSerial(ports.main);
    // A new CA key in the bundle makes the server reissue its own SVID (ServerTlsIdentity.refresh).
    expect((await runCli(["ca", "rotate", "--step", "prepare", "--data-dir", server.dataDir])).code).toBe(0);
    let after = before;
    for (let i = 0; i < 100 && after === before; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await presentedSerial(ports.main);
    }
    expect(after).not.toBe(before);
    expect(await agreedTls12Suite(ports.main, "ECDHE-ECDSA-AES128-SHA")).toBeUndefined();
    expect(await agreedTls12Suite(ports.main, "ECDHE-ECDSA-AES128-GCM-SHA256")).toBe("ECDHE-ECDSA-AES128-GCM-SHA256");
    expect((await renegotiation(ports.main)).output).toMatch(/no renegotiation/);
  });
});

describe("the server certificate's names", () => {
  it("names the listen address, localhost and the configured names beside its SPIFFE ID", async () => {
    const r = await run("sh", ["-c", `openssl s_client -connect 127.0.0.1:${ports.main} -showcerts </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName`]);
    expect(r.code).toBe(0);
    const sans = r.stdout.split("\n")[1]!.trim().split(/,\s*/);
    expect(sans.sort()).toEqual(
      ["URI:spiffe://example.org/hallmark/server", "DNS:localhost", "DNS:hallmark.test", "IP Address:127.0.0.1", "IP Address:192.0.2.10", "IP Address:2001:DB8:0:0:0:0:0:10"].sort(),
    );
  });

  it("passes Node's default host check for https://127.0.0.1 against the bundle, as relying parties do", async () => {
    const leaf = await new Promise<X509Certificate>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port: ports.main, ca: readFileSync(bundlePath) }, () => {
        resolve(new X509Certificate(s.getPeerCertificate().raw));
        s.end();
      });
      s.on("error", reject);
    });
    expect(leaf.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(leaf.checkIP("198.51.100.1")).toBeUndefined();
  });

  it.skipIf(!HAVE_CURL)("lets curl reach https://127.0.0.1 with the trust bundle as its only CA", async () => {
    const r = await run("curl", ["-sS", "--cacert", bundlePath, `https://127.0.0.1:${ports.main}/healthz`]);
    expect(r.stderr).toBe("");
    expect(JSON.parse(r.stdout)).toEqual({ status: "ok" });
  });
});
