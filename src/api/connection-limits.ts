import type { Server as HttpServer, IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { ServerLimits } from "../config/server.js";
import type { Metrics } from "../service/metrics.js";
import { addressKey } from "./address-key.js";

/**
 * How often Node looks for requests past headersTimeout or requestTimeout. Its default (30 s)
 * would let a slow request live up to 30 s beyond its deadline; one pass over the open
 * connections each second costs little.
 */
const DEADLINE_CHECK_MS = 1000;

/** The limits of ServerLimits that are not TLS options, as Node's http(s).Server applies them. */
export type ConnectionLimits = Pick<
  ServerLimits,
  "headersTimeout" | "requestTimeout" | "idleTimeout" | "maxConnections" | "maxConnectionsPerAddress" | "maxHeadersCount" | "maxOpenRequestsPerConnection"
>;

/**
 * Bounds what anonymous connections can hold on a public listener, before any route runs:
 *   - headers and the whole request must arrive within their deadlines however slowly they
 *     trickle (Node answers 408 and closes);
 *   - a connection silent for idleTimeout is closed (before its first request, between
 *     keep-alive requests, or stalled: Node's headersTimeout only starts at the first byte);
 *   - at most maxConnections in all (Node closes the excess on accept) and at most
 *     maxConnectionsPerAddress from one address, so that one client cannot take all the slots
 *     and health checks and node traffic from elsewhere keep being served;
 *   - at most maxOpenRequestsPerConnection requests open on one connection (capOpenRequests).
 * The TLS handshake deadline is a TLS option (handshakeTimeout), set where the server is created.
 * Call before listen() (the deadline checker starts when the server starts listening), and after
 * the application's request listener is attached (fastify attaches it when it creates the server).
 */
export function applyConnectionLimits(server: HttpServer, limits: ConnectionLimits, metrics?: Metrics): void {
  server.headersTimeout = limits.headersTimeout * 1000;
  server.requestTimeout = limits.requestTimeout * 1000;
  server.keepAliveTimeout = limits.idleTimeout * 1000;
  server.timeout = limits.idleTimeout * 1000;
  server.maxHeadersCount = limits.maxHeadersCount;
  server.maxConnections = limits.maxConnections;
  (server as HttpServer & { connectionsCheckingInterval: number }).connectionsCheckingInterval = DEADLINE_CHECK_MS;

  const perAddress = new Map<string, number>();
  let total = 0;
  // Prepended: the excess socket is closed before TLS spends anything on it.
  server.prependListener("connection", (socket: Socket) => {
    const key = addressKey(socket.remoteAddress);
    const open = perAddress.get(key) ?? 0;
    if (open >= limits.maxConnectionsPerAddress) {
      metrics?.connectionRefused("address_cap");
      socket.destroy();
      return;
    }
    perAddress.set(key, open + 1);
    total += 1;
    socket.once("close", () => {
      total -= 1;
      const left = (perAddress.get(key) ?? 1) - 1;
      if (left > 0) perAddress.set(key, left);
      else perAddress.delete(key);
    });
  });
  server.on("drop", () => metrics?.connectionRefused("total_cap"));
  metrics?.trackOpenConnections(() => total);
  capOpenRequests(server, limits.maxOpenRequestsPerConnection, metrics);
}

type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * At most `cap` requests open (read and not yet answered) on one connection. The connection that
 * brings one more is closed at once, and that request, like any read after it from the same
 * bytes, never reaches the application.
 *
 * Why: Node's HTTP/1.1 server hands the application every request a client pipelines as soon as
 * its bytes are read, and stops reading a connection only when its answers back up. One
 * connection pipelining 100,000 small GETs (3.6 MB) grew the server from 120 MB to 536 MB in 10 s,
 * still growing: every request waited its turn (src/api/arrival-order.ts) with its objects alive.
 * Go's and nginx's servers read a connection's next request only after answering the last.
 * Closing is the one refusal HTTP/1.1 allows here: answers go in request order, so a 503 would
 * wait behind every request before it, while more were read.
 */
function capOpenRequests(server: HttpServer, cap: number, metrics?: Metrics): void {
  // The application's listener (fastify's), called through the cap rather than beside it.
  const listeners = server.listeners("request") as RequestListener[];
  server.removeAllListeners("request");
  const open = new WeakMap<Socket, number>();
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    // Closed by the cap while the rest of its bytes were parsed: nobody will read an answer.
    if (socket.destroyed) return;
    const count = (open.get(socket) ?? 0) + 1;
    if (count > cap) {
      metrics?.connectionRefused("open_requests_cap");
      socket.destroy();
      return;
    }
    open.set(socket, count);
    // "close": answered, or its connection gone.
    res.once("close", () => open.set(socket, (open.get(socket) ?? 1) - 1));
    for (const listener of listeners) listener.call(server, req, res);
  });
}
