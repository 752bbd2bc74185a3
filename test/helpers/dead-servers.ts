import { webcrypto } from "node:crypto";
import { createServer as createHttpsServer } from "node:https";
import { type Socket, createServer } from "node:net";
import * as x509 from "@peculiar/x509";
import { testCert } from "./test-pki.js";

/**
 * What stands in a server list beside a real Hallmark server, for failover tests: real sockets
 * on loopback, each failing the way a replica does.
 */

/** A loopback port nothing listens on (bound, then closed): connections are refused. */
export async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A port that accepts TCP connections and never says a word (a hung process, a black-holing middlebox). */
export async function silentPort(): Promise<{ port: number; accepted(): number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const s = createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on("error", () => undefined);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  return {
    port: (s.address() as { port: number }).port,
    accepted: () => accepted,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((r) => s.close(r));
    },
  };
}

/**
 * An HTTPS server with a certificate for `serverId` (from its own CA, `caPem`: add it to a client's
 * trust bundle to make it a trusted replica, or leave it out to make it an impostor), answering
 * every request with `status` and a problem document carrying `code`, as a Hallmark replica does
 * when it refuses (401 for a node it does not know, 503 when its datastore is down).
 */
export async function answeringReplica(o: {
  status: number;
  code: string;
  serverId?: string;
}): Promise<{ port: number; caPem: string; requests(): number; close(): Promise<void> }> {
  const ca = await testCert({ name: "stand-in replica CA", curve: "P-256" });
  const leaf = await testCert({
    name: "stand-in replica",
    curve: "P-256",
    issuer: ca,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: o.serverId ?? "spiffe://example.org/hallmark/server" }])],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", leaf.keys.privateKey)).toString("base64");
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)!.join("\n")}\n-----END PRIVATE KEY-----\n`;
  let requests = 0;
  const s = createHttpsServer({ cert: leaf.cert.toString("pem"), key: keyPem }, (req, res) => {
    requests++;
    req.resume();
    req.on("end", () => {
      res.writeHead(o.status, { "content-type": "application/problem+json" });
      res.end(JSON.stringify({ type: "about:blank", title: "stand-in", status: o.status, code: o.code, detail: `the stand-in replica answers ${o.code}` }));
    });
  });
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  return {
    port: (s.address() as { port: number }).port,
    caPem: ca.cert.toString("pem"),
    requests: () => requests,
    close: async () => {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    },
  };
}
