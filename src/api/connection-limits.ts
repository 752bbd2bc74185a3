import type { Server as HttpServer } from "node:http";
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
  "headersTimeout" | "requestTimeout" | "idleTimeout" | "maxConnections" | "maxConnectionsPerAddress" | "maxHeadersCount"
>;

/**
 * Bounds what anonymous connections can hold on a public listener, before any route runs:
 *   - headers and the whole request must arrive within their deadlines however slowly they
 *     trickle (Node answers 408 and closes);
 *   - a connection silent for idleTimeout is closed (before its first request, between
 *     keep-alive requests, or stalled: Node's headersTimeout only starts at the first byte);
 *   - at most maxConnections in all (Node closes the excess on accept) and at most
 *     maxConnectionsPerAddress from one address, so that one client cannot take all the slots
 *     and health checks and node traffic from elsewhere keep being served.
 * The TLS handshake deadline is a TLS option (handshakeTimeout), set where the server is created.
 * Call before listen(): the deadline checker starts when the server starts listening.
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
}
