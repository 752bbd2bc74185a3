import { lookup } from "node:dns/promises";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { runCli } from "../helpers/cli.js";
import { answeringReplica, closedPort, silentPort } from "../helpers/dead-servers.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 13, item 4 (the client side): every client command takes `--server URL1,URL2,…` and goes
 * past a server it cannot reach (a closed port, a port that accepts and never speaks TLS, a
 * replica answering 503) to the next, with one line on stderr naming what failed; it stays with
 * the one that answered for the rest of the command; when none can be reached, one line names
 * them all and the exit is 1. An answer (a 401, an impostor's certificate) is not skipped.
 */
const NODE = "spiffe://example.org/node/failover";
const WORKLOAD = "spiffe://example.org/failover-workload";
const work = tempDir("server-failover");
const nodeDir = join(work.path, "node");
let server: TestServer;
let bundlePem: string;
let closed: string;
let silent: Awaited<ReturnType<typeof silentPort>>;
let silentUrl: string;
let unavailable: Awaited<ReturnType<typeof answeringReplica>>;
let refusing: Awaited<ReturnType<typeof answeringReplica>>;
let impostor: Awaited<ReturnType<typeof answeringReplica>>;
let wrongId: Awaited<ReturnType<typeof answeringReplica>>;

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
const url = (port: number, host = "127.0.0.1") => `https://${host}:${port}`;
let n = 0;
/** A fresh bundle file for each command (attest and fetch rewrite it with what the server sends). */
function bundleFile(...extraCas: string[]): string {
  const path = join(work.path, `bundle-${n++}.pem`);
  writeFileSync(path, bundlePem + extraCas.join(""));
  return path;
}
const fetchX509 = (servers: string[], bundle = bundleFile()) =>
  runCli(["fetch", "x509", "--server", servers.join(","), "--svid", join(nodeDir, "svid.pem"), "--key", join(nodeDir, "svid.key"), "--trust-bundle", bundle, "--out", join(work.path, "w"), "--json"]);
const lines = (s: string) => s.split("\n").filter((l) => l.length > 0);

beforeAll(async () => {
  server = await startTestServer();
  bundlePem = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  closed = url(await closedPort());
  silent = await silentPort();
  silentUrl = url(silent.port);
  unavailable = await answeringReplica({ status: 503, code: "store_unavailable" });
  refusing = await answeringReplica({ status: 401, code: "client_cert_invalid" });
  impostor = await answeringReplica({ status: 200, code: "none" });
  wrongId = await answeringReplica({ status: 200, code: "none", serverId: "spiffe://example.org/not-hallmark" });
}, 60_000);
afterAll(async () => {
  await Promise.all([silent?.close(), unavailable?.close(), refusing?.close(), impostor?.close(), wrongId?.close()]);
  await server?.destroy();
  work.remove();
});

describe("--server URL1,URL2,…", () => {
  it("attests past a closed port and a silent one, with one line naming both, and stays with the server that answered", async () => {
    const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
    const r = await runCli(["attest", "--server", [closed, silentUrl, server.url].join(","), "--trust-bundle", bundleFile(), "--join-token", token, "--out", nodeDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${NODE} `));
    // Attestation is two requests (session, evidence): the second went straight to the server that
    // answered the first, so the dead ones were tried (and reported) once.
    expect(lines(r.stderr)).toEqual([`hallmark: warning: ${closed} (ECONNREFUSED), ${silentUrl} (no TLS handshake in 5 s) failed; ${server.url} answered`]);
    expect(silent.accepted()).toBe(1);
  }, 30_000);

  it("fetches over mutual TLS past a closed port and a replica answering 503", async () => {
    await admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: WORKLOAD, selectors: [] });
    const before = unavailable.requests();
    const r = await fetchX509([closed, url(unavailable.port), server.url], bundleFile(unavailable.caPem));
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { spiffe_id: string }).spiffe_id).toBe(WORKLOAD);
    expect(lines(r.stderr)).toEqual([`hallmark: warning: ${closed} (ECONNREFUSED), ${url(unavailable.port)} (HTTP 503) failed; ${server.url} answered`]);
    expect(unavailable.requests()).toBe(before + 1);
  });

  it("names every server in one line and exits 1 when none can be reached", async () => {
    const r = await fetchX509([closed, silentUrl]);
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toEqual([`hallmark: unavailable: cannot reach the servers: ${closed} (ECONNREFUSED), ${silentUrl} (no TLS handshake in 5 s)`]);
    // Every replica answering 503: the caller gets the server's own code.
    const all503 = await fetchX509([closed, url(unavailable.port)], bundleFile(unavailable.caPem));
    expect(all503.code).toBe(1);
    expect(lines(all503.stderr)).toEqual(["hallmark: store_unavailable: the stand-in replica answers store_unavailable"]);
  }, 30_000);

  it("does not skip a server's answer: a refusal, or a certificate the trust bundle does not certify", async () => {
    const refused = await fetchX509([url(refusing.port), server.url], bundleFile(refusing.caPem));
    expect(refused.code).toBe(1);
    expect(lines(refused.stderr)).toEqual(["hallmark: client_cert_invalid: the stand-in replica answers client_cert_invalid"]);
    expect(refusing.requests()).toBe(1);
    // An impostor (its CA is not in the bundle) is loud, never passed over for the next server.
    const untrusted = await fetchX509([url(impostor.port), server.url]);
    expect(untrusted.code).toBe(1);
    expect(lines(untrusted.stderr)).toHaveLength(1);
    expect(untrusted.stderr).toMatch(/^hallmark: server_untrusted: /);
    expect(impostor.requests()).toBe(0);
    // A server whose certificate the bundle certifies but which carries another SPIFFE ID than
    // --server-id (every replica must carry it): refused too, not passed over.
    const otherId = await runCli([
      ...["fetch", "x509", "--server", [url(wrongId.port), server.url].join(","), "--server-id", "spiffe://example.org/hallmark/server"],
      ...["--svid", join(nodeDir, "svid.pem"), "--key", join(nodeDir, "svid.key"), "--trust-bundle", bundleFile(wrongId.caPem), "--out", join(work.path, "w2")],
    ]);
    expect(otherId.code).toBe(1);
    expect(lines(otherId.stderr)).toEqual(["hallmark: server_untrusted: the server's certificate does not carry spiffe://example.org/hallmark/server"]);
    expect(wrongId.requests()).toBe(0);
  });

  it("resolves a name, and tries each of its addresses in turn", async () => {
    const port = new URL(server.url).port;
    const byName = await fetchX509([`https://localhost:${new URL(closed).port}`, `https://localhost:${port}`]);
    expect(byName.code, byName.stderr).toBe(0);
    expect(lines(byName.stderr)).toEqual([`hallmark: warning: https://localhost:${new URL(closed).port} (ECONNREFUSED) failed; https://localhost:${port} answered`]);

    const addresses = await lookup("localhost", { all: true, verbatim: true });
    const loopbacks = addresses.map((a) => a.address);
    if (!(loopbacks.includes("127.0.0.1") && loopbacks.includes("::1"))) {
      console.warn(`skipping the several-addresses half: localhost resolves to ${loopbacks.join(", ")} only here (a name with ::1 and 127.0.0.1 is needed, and /etc/hosts is not ours to edit)`);
      return;
    }
    // The server listens on 127.0.0.1 only: ::1 refuses, and the command goes on to the next address.
    const both = await fetchX509([`https://localhost:${port}`]);
    expect(both.code, both.stderr).toBe(0);
    if (loopbacks[0] === "::1") expect(lines(both.stderr)).toEqual([`hallmark: warning: https://localhost:${port} (::1) (ECONNREFUSED) failed; https://localhost:${port} (127.0.0.1) answered`]);
  });

  it("checks every URL of the list before connecting anywhere (exit 2)", async () => {
    const r = await fetchX509([server.url, "127.0.0.1:9"]);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual(["hallmark: --server '127.0.0.1:9' has no scheme: did you mean https://127.0.0.1:9?"]);
  });
});
