import type { FastifyRequest } from "fastify";
import type { TLSSocket } from "node:tls";
import { HallmarkError } from "../errors.js";

/**
 * The SPIFFE ID of the verified TLS client. The TLS layer checked the chain against the trust
 * bundle (requestCert with the bundle as `ca`); here we require that it did, and read the one
 * URI SAN an X509-SVID carries.
 */
/**
 * A kept-alive TLS 1.3 connection has one peer for its whole life (1.3 has no renegotiation):
 * its ID is read once per connection. TLS 1.2 connections are read on every request.
 */
const peerIds = new WeakMap<object, string>();

export function peerSpiffeId(request: FastifyRequest): string {
  const socket = request.raw.socket as Partial<TLSSocket>;
  const known = peerIds.get(socket);
  if (known) return known;
  const id = readPeerSpiffeId(socket);
  if (socket.getProtocol?.() === "TLSv1.3") peerIds.set(socket, id);
  return id;
}

function readPeerSpiffeId(socket: Partial<TLSSocket>): string {
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
  return uris[0];
}
