import type { FastifyReply, FastifyRequest } from "fastify";
import type { PeerCertificate, Server as TlsServer, TLSSocket } from "node:tls";
import { HallmarkError, isHallmarkError } from "../errors.js";
import { type PresentedSvid, normalizeSerial } from "../service/ports.js";

/**
 * The X509-SVID of the verified TLS client. The TLS layer checked the chain against the trust
 * bundle at handshake time (requestCert with the bundle as `ca`); here we require that it did,
 * and read the one URI SAN an X509-SVID carries, its serial and its validity, which the services
 * check again on every request: a handshake proves nothing about the minutes after it.
 *
 * A kept-alive TLS 1.3 connection has one peer for its whole life (1.3 has no renegotiation):
 * its certificate is read once per connection. TLS 1.2 connections are read on every request.
 */
const presented = new WeakMap<object, PresentedSvid>();

export function presentedSvid(request: FastifyRequest): PresentedSvid {
  const socket = request.raw.socket as Partial<TLSSocket>;
  const known = presented.get(socket);
  if (known) return known;
  const svid = readPresentedSvid(socket);
  if (socket.getProtocol?.() === "TLSv1.3") presented.set(socket, svid);
  return svid;
}

/**
 * Runs a node authentication; a refusal of a certificate that can never work again (expired,
 * replaced, evicted, banned) also closes the connection once the answer is written, so no
 * kept-alive connection lingers on a dead credential.
 */
export async function authenticatedNode<T>(reply: FastifyReply, authenticate: () => Promise<T>): Promise<T> {
  try {
    return await authenticate();
  } catch (e) {
    if (isHallmarkError(e) && CLOSING_CODES.has(e.code)) reply.header("connection", "close");
    throw e;
  }
}

const CLOSING_CODES = new Set([
  "node_svid_expired",
  "node_svid_superseded",
  "node_evicted",
  "node_banned",
  "client_cert_invalid",
  // A proof refused on a connection cannot become valid on it (its exporter value is fixed).
  "node_proof_invalid",
  "node_proof_svid_invalid",
  "node_proof_requires_tls13",
  "node_proof_conflict",
]);

/**
 * Closes each mutually authenticated connection when its client certificate expires, so an idle
 * kept-alive connection does not outlive its credential (request-time checks refuse it anyway).
 */
export function closeConnectionsAtCertificateExpiry(server: TlsServer, now: () => Date): void {
  server.on("secureConnection", (socket: TLSSocket) => {
    const cert = socket.getPeerCertificate();
    if (!socket.authorized || !cert?.valid_to) return;
    const ms = Date.parse(cert.valid_to) - now().getTime();
    if (!Number.isFinite(ms)) return;
    // setTimeout's limit is 2^31-1 ms (24.8 days); a longer-lived certificate is checked per request only.
    if (ms > 2 ** 31 - 1) return;
    const timer = setTimeout(() => socket.destroy(), Math.max(0, ms) + 1000);
    timer.unref();
    socket.once("close", () => clearTimeout(timer));
  });
}

function readPresentedSvid(socket: Partial<TLSSocket>): PresentedSvid {
  if (typeof socket.getPeerCertificate !== "function") {
    throw new HallmarkError("client_cert_required", "this endpoint needs mutual TLS with a node SVID");
  }
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) {
    throw new HallmarkError("client_cert_required", "this endpoint needs mutual TLS with a node SVID");
  }
  if (!socket.authorized) {
    throw new HallmarkError("client_cert_invalid", "the client certificate does not chain to this trust domain");
  }
  const uris = (cert.subjectaltname ?? "")
    .split(", ")
    .filter((s) => s.startsWith("URI:"))
    .map((s) => s.slice(4));
  if (uris.length !== 1 || !uris[0]) {
    throw new HallmarkError("client_cert_invalid", "the client certificate must carry exactly one URI SAN");
  }
  return { spiffeId: uris[0], serial: normalizeSerial(cert.serialNumber), ...validity(cert) };
}

function validity(cert: PeerCertificate): { notBefore: Date; notAfter: Date } {
  const notBefore = new Date(cert.valid_from);
  const notAfter = new Date(cert.valid_to);
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) {
    throw new HallmarkError("client_cert_invalid", "the client certificate's validity cannot be read");
  }
  return { notBefore, notAfter };
}
