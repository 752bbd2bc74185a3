import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Server as TlsServer } from "node:tls";
import type { Logger } from "pino";
import type { ServerLimits } from "../config/server.js";
import type { Metrics } from "../service/metrics.js";
import { type AdminRouteDeps, adminRoutes } from "./admin-routes.js";
import { raiseAnswerHighWaterMark } from "./answer-high-water-mark.js";
import { installBindWithoutDeprecatedAccessor } from "./async-resource-bind.js";
import { serveInArrivalOrder } from "./arrival-order.js";
import { applyConnectionLimits } from "./connection-limits.js";
import { problemServerOptions, registerProblemHandlers } from "./problem.js";
import { PUBLIC_ROUTES, type PublicRouteDeps, publicRoutes } from "./public-routes.js";
import { loggingOptions } from "./request-logger.js";
import { TLS_POLICY } from "./tls-policy.js";
import { type WellKnownRouteDeps, wellKnownRoutes } from "./well-known-routes.js";

export interface TlsMaterial {
  key: string;
  cert: string;
  /** Trust bundle (PEM) that client certificates must chain to. */
  ca: string;
}

export interface PublicAppOptions {
  log: Logger;
  bodyLimit: number;
  /** Omit only for in-process tests with app.inject (no TLS, so no mTLS endpoints). */
  tls?: TlsMaterial;
  /** Deadlines and connection caps of the listener (src/api/connection-limits.ts). */
  limits?: ServerLimits;
  metrics?: Metrics;
}

/**
 * The public HTTPS API. Client certificates are requested but not required at the TLS layer,
 * since attestation and bundle endpoints serve callers who have no SVID yet; node endpoints
 * demand a verified one (src/api/peer.ts).
 */
export async function buildPublicApp(opts: PublicAppOptions, deps: PublicRouteDeps): Promise<FastifyInstance> {
  // Every issuance request has a body, which fastify's parser binds to the request's async context.
  installBindWithoutDeprecatedAccessor();
  const app = Fastify({
    ...loggingOptions(opts.log as FastifyBaseLogger),
    bodyLimit: opts.bodyLimit,
    return503OnClosing: true,
    ...problemServerOptions(opts.log),
    ...(opts.tls
      ? {
          https: {
            ...handshakeDeadline(opts.limits),
            key: opts.tls.key,
            cert: opts.tls.cert,
            ca: opts.tls.ca,
            requestCert: true,
            rejectUnauthorized: false,
            ...TLS_POLICY,
          },
        }
      : {}),
  });
  if (opts.limits) {
    applyConnectionLimits(app.server, opts.limits, opts.metrics);
    serveInArrivalOrder(app, opts.limits.requestsPerTurn, PROBES, opts.metrics);
  }
  if (opts.tls) raiseAnswerHighWaterMark(app.server as unknown as TlsServer);
  registerProblemHandlers(app, opts.log);
  await app.register(publicRoutes, deps);
  return app;
}

/** What probes and scrapers ask: answered at once, never queued behind issuance. */
const PROBES = new Set([PUBLIC_ROUTES.healthz.url, PUBLIC_ROUTES.readyz.url, PUBLIC_ROUTES.metrics.url]);

/** Node's default TLS handshake deadline is 120 s; ours is absolute however slowly the bytes arrive. */
function handshakeDeadline(limits: ServerLimits | undefined): { handshakeTimeout?: number } {
  return limits ? { handshakeTimeout: limits.handshakeTimeout * 1000 } : {};
}

export async function buildAdminApp(opts: { log: Logger }, deps: AdminRouteDeps): Promise<FastifyInstance> {
  const app = Fastify({
    ...loggingOptions(opts.log as FastifyBaseLogger),
    bodyLimit: 64 * 1024,
    ...problemServerOptions(opts.log),
  });
  registerProblemHandlers(app, opts.log);
  await app.register(adminRoutes, deps);
  return app;
}

/**
 * The https_web federation bundle endpoint: only the well-known documents, over TLS with a Web PKI
 * certificate and no client authentication (SPIFFE Federation §5.2.1.3).
 */
export async function buildWebBundleApp(
  opts: { log: Logger; tls: { key: string; cert: string }; limits?: ServerLimits },
  deps: WellKnownRouteDeps,
): Promise<FastifyInstance> {
  const app = Fastify({
    ...loggingOptions(opts.log as FastifyBaseLogger),
    bodyLimit: 1024,
    return503OnClosing: true,
    ...problemServerOptions(opts.log),
    https: { ...handshakeDeadline(opts.limits), key: opts.tls.key, cert: opts.tls.cert, ...TLS_POLICY },
  });
  if (opts.limits) applyConnectionLimits(app.server, opts.limits);
  raiseAnswerHighWaterMark(app.server as unknown as TlsServer);
  registerProblemHandlers(app, opts.log);
  await app.register(wellKnownRoutes, deps);
  return app;
}
