import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { connect as tcpConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { NodeClient } from "../../src/client/node.js";
import { httpsRaw } from "../helpers/https.js";
import { rawUntilClosed } from "../helpers/raw-http.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/**
 * Issue 7 item 3, slowloris: a few thousand slow anonymous connections on loopback, from several
 * 127.x addresses (Linux routes all of 127/8 to lo), must neither take the server's health and
 * mTLS issuance down nor stay open: each kind of slowness meets its own deadline, and connections
 * beyond the per-address cap are closed on arrival. A connection pipelining more requests than it
 * may hold open is closed too.
 */
const PER_ADDRESS = 250;
const LIMITS = {
  handshakeTimeout: 2,
  headersTimeout: 2,
  requestTimeout: 3,
  idleTimeout: 2,
  maxConnections: 3000,
  maxConnectionsPerAddress: PER_ADDRESS,
  maxHeadersCount: 64,
  attestRate: { perSecond: 1000, burst: 1000, trackedAddresses: 1000 },
  rateLimitAuditInterval: 60,
  purgeInterval: 60,
};

let server: TestServer;
let port: number;
beforeAll(async () => {
  server = await startTestServer({ overrides: { limits: LIMITS } });
  port = Number(new URL(server.url).port);
});
afterAll(async () => {
  await server?.destroy();
});

type Kind = "silent_tcp" | "trickled_handshake" | "silent_tls" | "trickled_headers" | "trickled_body";

interface Attacker {
  kind: Kind;
  socket: Socket;
  closed: boolean;
  /** Connected (TCP) or secured (TLS), and the request line sent for trickled bodies: ready to trickle. */
  ready: boolean;
  /** What the server answered before closing, if anything. */
  answer: string;
}

/** One slow connection from `from`; a shared ticker writes its next byte, if any, every second. */
function slowConnection(kind: Kind, from: string): Attacker {
  const opts = { host: "127.0.0.1", port, localAddress: from };
  const socket =
    kind === "silent_tcp" || kind === "trickled_handshake" ? tcpConnect(opts) : tlsConnect({ ...opts, rejectUnauthorized: false });
  const a: Attacker = { kind, socket, closed: false, ready: false, answer: "" };
  socket.on("data", (d: Buffer) => (a.answer += d.toString("latin1")));
  socket.on("error", () => undefined);
  socket.on("close", () => (a.closed = true));
  socket.once(kind === "silent_tcp" || kind === "trickled_handshake" ? "connect" : "secureConnect", () => {
    if (kind === "trickled_body") socket.write("POST /v1/attest/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n");
    a.ready = true;
  });
  return a;
}

const NEXT_BYTE: Record<Kind, (i: number) => string | Buffer | undefined> = {
  silent_tcp: () => undefined,
  silent_tls: () => undefined,
  // The first bytes of a TLS record header, one at a time: a ClientHello that never completes.
  trickled_handshake: (i) => Buffer.from([[0x16, 0x03, 0x01, 0x02, 0x00][i % 5] ?? 0]),
  trickled_headers: (i) => "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "[i] ?? "a",
  trickled_body: () => "a",
};

function trickle(attackers: Attacker[]): () => void {
  let i = 0;
  const timer = setInterval(() => {
    for (const a of attackers) {
      if (a.closed || !a.ready || a.answer) continue;
      const b = NEXT_BYTE[a.kind](i);
      if (b !== undefined) a.socket.write(b);
    }
    i += 1;
  }, 1000);
  return () => clearInterval(timer);
}

async function metric(name: string): Promise<number> {
  const r = await httpsRaw(`${server.url}/metrics`);
  const line = r.text.split("\n").find((l) => l.startsWith(name));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("slow and excess anonymous connections", () => {
  it("closes connections beyond the per-address cap on arrival, and the rest at the handshake deadline", async () => {
    const attackers = Array.from({ length: PER_ADDRESS + 50 }, () => slowConnection("silent_tcp", "127.0.0.10"));
    await vi.waitFor(() => expect(attackers.filter((a) => !a.socket.connecting || a.closed).length).toBe(attackers.length), { timeout: 10_000 });
    expect(await metric('hallmark_connections_refused_total{reason="address_cap"}')).toBe(50);
    // Another address is not affected by this one's cap.
    expect((await httpsRaw(`${server.url}/healthz`)).status).toBe(200);
    // Nobody finished a handshake: all of them are closed by the handshake deadline.
    await vi.waitFor(() => expect(attackers.filter((a) => a.closed).length).toBe(attackers.length), { timeout: 15_000, interval: 200 });
  });

  it("closes a connection that pipelines 100,000 requests once it holds more than 16 open, before they pile up", async () => {
    // 3.6 MB in one write: without the cap the server parsed and held every one of them.
    const { raw } = await rawUntilClosed({ url: server.url }, "GET /v1/bundle HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100_000));
    expect(await metric('hallmark_connections_refused_total{reason="open_requests_cap"}')).toBe(1);
    // At most the 16 it was allowed were started.
    expect(raw.split("HTTP/1.1 200 ").length - 1).toBeLessThanOrEqual(16);
    expect(await metric("hallmark_requests_waiting")).toBe(0);
    expect((await httpsRaw(`${server.url}/healthz`)).status).toBe(200);
  }, 20_000);

  it("keeps /healthz and mTLS issuance answering under 2,080 slow connections from 8 addresses, and cuts every slow one off", async () => {
    // A node with an SVID and an entry to fetch, made before the attack.
    const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
    const bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
    const token = ((await admin("POST", "/admin/tokens", { spiffe_id: "spiffe://example.org/node/slow", ttl_seconds: 600 })) as { token: string }).token;
    const svid = await attest({ server: server.url, tls: { trustBundlePem: bundle }, producer: joinTokenProducer(token) });
    await admin("POST", "/admin/entries", { spiffe_id: "spiffe://example.org/web", parent_id: "spiffe://example.org/node/slow", selectors: [] });

    const kinds: Kind[] = ["silent_tcp", "trickled_handshake", "silent_tls", "trickled_headers", "trickled_body"];
    const attackers: Attacker[] = [];
    for (let addr = 2; addr <= 9; addr++) {
      for (let i = 0; i < PER_ADDRESS + 10; i++) attackers.push(slowConnection(kinds[i % kinds.length]!, `127.0.0.${addr}`));
    }
    const stop = trickle(attackers);
    try {
      await vi.waitFor(() => expect(attackers.filter((a) => !a.socket.connecting || a.closed).length).toBe(attackers.length), { timeout: 10_000 });
      expect(await metric("hallmark_open_connections")).toBeLessThanOrEqual(LIMITS.maxConnections);

      // Under the attack: health and mTLS issuance answer.
      expect((await httpsRaw(`${server.url}/healthz`)).status).toBe(200);
      const node = new NodeClient(server.url, { certPem: svid.certChainPem, keyPem: svid.privateKeyPem!, trustBundlePem: bundle });
      try {
        expect((await node.fetchX509("spiffe://example.org/web")).spiffeId).toBe("spiffe://example.org/web");
      } finally {
        node.close();
      }

      // The server lets go of every slow connection, whatever its kind: in the end it holds only
      // the connection asking for its metrics.
      await vi.waitFor(async () => expect(await metric("hallmark_open_connections")).toBe(1), { timeout: 15_000, interval: 500 });
      // No request read from any of them is left waiting for its turn (src/api/arrival-order.ts).
      expect(await metric("hallmark_requests_waiting")).toBe(0);
      // And the clients see it: every connection that sent anything was closed. (A silent TCP client
      // may not notice: in a burst this size the kernel's accept queue overflows, and a connection
      // the server never accepted stays "open" on the client's side only.)
      await vi.waitFor(() => expect(attackers.filter((a) => !a.closed && a.kind !== "silent_tcp").map((a) => a.kind)).toEqual([]), {
        timeout: 5_000,
        interval: 250,
      });
    } finally {
      stop();
      for (const a of attackers) a.socket.destroy();
    }
    // A trickled body never completes: the server answers 408 and closes (100,000 bytes at one a second would take a day).
    const bodies = attackers.filter((a) => a.kind === "trickled_body" && a.answer);
    expect(bodies.length).toBeGreaterThan(0);
    for (const a of bodies) expect(a.answer).toMatch(/^HTTP\/1\.1 408 /);
  }, 40_000);
});
