import { connect, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { attest, joinTokenProducer, type SvidFiles } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { type ServerProcess, startServerProcess } from "../helpers/server-process.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Keep-alive clients that send their next request as soon as a large answer has arrived, its body
 * in two TLS records (Go's net/http does: its 4 KiB write buffer splits a 4.5 KB body), must never
 * have their connection cut. Node's HTTP server pauses a connection's parser when a request's
 * headers arrive while the previous answer has not drained; on TLS the rest of that request,
 * decrypted from the same read, still reaches the paused parser, which refuses it (HPE_PAUSED) and
 * the client sees EOF. Found by the speed bench (issue 10): 20-40 of ~900 batch requests in 4 s.
 */
const NODE = "spiffe://example.org/node/keep-alive";
const WORKLOAD = "spiffe://example.org/keep-alive/w";
const CONNECTIONS = 16;
const REQUESTS_EACH = 25;
const work = tempDir("keep-alive");
let server: ServerProcess;
let url: URL;
let node: SvidFiles;

// A server process of its own, as deployed: sharing this test's event loop, it never lagged enough for the race.
beforeAll(async () => {
  // 25,600 JWT-SVIDs for one node within seconds: far past a node's default allowance (limits.issuanceRate).
  const config = join(work.path, "config.json");
  writeFileSync(config, JSON.stringify({ limits: { issuanceRate: { perSecond: 1_000_000, burst: 1_000_000 } } }));
  server = startServerProcess(work.path, { args: ["--config", config] });
  await server.ready;
  url = new URL(/listening on (https:\/\/\S+) /.exec(server.stderr())![1]!);
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(join(work.path, "admin.sock"), method, path, body));
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
  const { bundle_pem: trustBundlePem } = (await admin("GET", "/admin/bundle")) as { bundle_pem: string };
  node = await attest({ server: url.origin, tls: { trustBundlePem }, producer: joinTokenProducer(token) });
  await admin("POST", "/admin/entries", { spiffe_id: WORKLOAD, parent_id: NODE, selectors: [] });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  work.remove();
});

/** One keep-alive connection: each request written as two TLS records, the next one sent the moment an answer is whole. */
async function keepAliveClient(requests: number, body: string): Promise<{ answered: number; statuses: number[]; cut: string | undefined }> {
  const socket: TLSSocket = connect({ host: url.hostname, port: Number(url.port), cert: node.certChainPem, key: node.privateKeyPem!, rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
  const request = Buffer.from(
    `POST /v1/svids/jwt/batch HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  const statuses: number[] = [];
  let pending = Buffer.alloc(0);
  let cut: string | undefined;
  return new Promise((resolve) => {
    const send = () => {
      socket.write(request.subarray(0, 4096));
      socket.write(request.subarray(4096));
    };
    const done = () => {
      socket.destroy();
      resolve({ answered: statuses.length, statuses, cut });
    };
    socket.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        const end = pending.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = pending.subarray(0, end).toString("latin1");
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (pending.length < end + 4 + length) return;
        statuses.push(Number(head.split(" ")[1]));
        pending = pending.subarray(end + 4 + length);
        if (statuses.length === requests) return done();
        send();
      }
    });
    socket.on("close", () => {
      cut ??= statuses.length < requests ? `closed after ${statuses.length} answers` : undefined;
      done();
    });
    socket.on("error", (e) => (cut = e.message));
    send();
  });
}

describe("keep-alive connections after large answers", () => {
  it(`${CONNECTIONS} connections × ${REQUESTS_EACH} JWT batches of 64 (answers ~45 KB, bodies in two records): every request answered 200, no connection cut`, async () => {
    const body = JSON.stringify({ requests: Array.from({ length: 64 }, (_, i) => ({ spiffe_id: WORKLOAD, audience: [`https://keep-alive-${i}.example.org`] })) });
    expect(Buffer.byteLength(body)).toBeGreaterThan(4096); // the body does span two records
    const results = await Promise.all(Array.from({ length: CONNECTIONS }, () => keepAliveClient(REQUESTS_EACH, body)));
    expect(results.map((r) => r.cut).filter(Boolean)).toEqual([]);
    expect(results.flatMap((r) => r.statuses).filter((s) => s !== 200)).toEqual([]);
    expect(results.reduce((n, r) => n + r.answered, 0)).toBe(CONNECTIONS * REQUESTS_EACH);
  }, 120_000);
});
