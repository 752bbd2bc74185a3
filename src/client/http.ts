import { X509Certificate, createPrivateKey } from "node:crypto";
import { request as httpRequest } from "node:http";
import { Agent, request as httpsRequest } from "node:https";
import type { Socket } from "node:net";
import type { PeerCertificate } from "node:tls";
import { HallmarkError } from "../errors.js";
import { SpiffeId } from "../spiffe/id.js";
import { type NodeProofKey, NodeProofAgent } from "./node-proof-agent.js";
import { ConnectionFailure, type ServerEndpoint, ServerList, type ServerTarget } from "./server-list.js";

/**
 * A small JSON-over-HTTP(S) client for Hallmark's API, with the server authenticated the SPIFFE
 * way: its certificate must chain to the trust bundle and carry the server's SPIFFE ID as its
 * URI SAN (hostnames are not what identifies a SPIFFE server).
 */
export interface ServerTls {
  /** PEM bundle to verify the server against; undefined only for insecure bootstrap. */
  trustBundlePem?: string | undefined;
  /** Expected server SPIFFE ID, e.g. spiffe://example.org/hallmark/server; any /hallmark/server when undefined. */
  serverId?: string | undefined;
  /** Client SVID for mutual TLS. */
  certPem?: string | undefined;
  keyPem?: string | undefined;
  /**
   * Instead of certPem/keyPem, for a node key that cannot sign a TLS handshake (a TPM-resident
   * key): each connection (TLS 1.3) carries the SVID chain and a proof bound to it.
   */
  nodeProof?: NodeProofKey | undefined;
  /** Connections kept open to the server (default 64). */
  maxSockets?: number | undefined;
  /** How long a new connection may take to complete its TLS handshake before the next server is tried (default 5 s). */
  connectTimeoutMs?: number | undefined;
}

export interface ApiResponse {
  status: number;
  body: unknown;
  /** The response's headers (DPoP-Nonce, WWW-Authenticate…), names in lower case. */
  headers: import("node:http").IncomingHttpHeaders;
}

/** A request body already encoded, with its media type (a form for OAuth, JSON for the rest). */
export interface EncodedBody {
  bytes: Buffer;
  contentType: string;
}

const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
/** A new connection that has not finished its TLS handshake by then is a server that is not there (a black hole, a hung process). */
export const CONNECT_TIMEOUT_MS = 5_000;
/** An answer that has not come by then: the server is hung (the request goes to the next server, if any). */
const ANSWER_TIMEOUT_MS = 30_000;

export class ApiClient {
  private agent: Agent;
  private readonly servers: ServerList;

  constructor(
    /** One server, or several replicas (see ServerList: failover on connection errors). */
    servers: ServerTarget,
    private tls: ServerTls,
  ) {
    this.servers = ServerList.from(servers);
    if (tls.certPem !== undefined && tls.keyPem !== undefined) checkSvidKeyPair(tls.certPem, tls.keyPem);
    this.agent = newAgent(tls);
  }

  /**
   * Trusts `bundlePem` from the next connection on (a bundle the server returned over a connection
   * it was authenticated on): kept-alive connections finish, new ones verify against it.
   */
  setTrustBundle(bundlePem: string): void {
    this.tls = { ...this.tls, trustBundlePem: bundlePem };
    const old = this.agent;
    this.agent = newAgent(this.tls);
    old.destroy();
  }

  request(method: string, path: string, body?: unknown): Promise<ApiResponse> {
    return this.send(method, path, jsonBody(body));
  }

  /**
   * One request, with an encoded body and headers of the caller's (an OAuth form with its DPoP
   * proof), to the server that answered last or, when it cannot be reached, to the next (see
   * ServerList). `path` may be an absolute URL (an endpoint from discovery): one on a listed
   * server goes to whichever replica answers; another is asked directly. Either way a new
   * connection authenticates the server anew (its certificate and SPIFFE ID, whatever its host
   * name) and, for a node with a TPM-resident key, carries a new proof.
   */
  send(method: string, path: string, body?: EncodedBody, headers: Record<string, string> = {}): Promise<ApiResponse> {
    const absolute = /^[A-Za-z][A-Za-z0-9+.-]*:/.test(path) ? new URL(path) : undefined;
    if (absolute && absolute.protocol !== "https:") return Promise.reject(new HallmarkError("invalid_request", `${absolute.origin} is not https://`));
    const target = absolute ? `${absolute.pathname}${absolute.search}` : path;
    if (absolute && !this.servers.lists(absolute)) {
      return this.sendTo({ origin: new URL(absolute.origin), host: absolute.host, label: absolute.origin }, method, target, body, headers);
    }
    return this.servers.send((server) => this.sendTo(server, method, target, body, headers));
  }

  private sendTo(server: ServerEndpoint, method: string, path: string, body: EncodedBody | undefined, headers: Record<string, string>): Promise<ApiResponse> {
    const url = new URL(path, server.origin);
    const agent = this.agent;
    return sendRequest(
      // The Host header (and from it the TLS server name) is the host as configured, not the address.
      (opts, cb) => httpsRequest(url, { ...opts, headers: { ...opts.headers, host: server.host }, agent }, cb),
      method,
      body,
      {
        extraHeaders: headers,
        connectTimeoutMs: this.tls.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
        headersFor: agent instanceof NodeProofAgent ? (socket) => agent.headersFor(socket) : undefined,
      },
    );
  }

  close(): void {
    this.agent.destroy();
  }
}

/**
 * Checks a client SVID and its private key as a pair before any TLS: otherwise a wrong key comes
 * out of OpenSSL as "key values mismatch", which tells an operator nothing. `names` say which
 * files they came from (the CLI passes its flags and paths).
 */
export function checkSvidKeyPair(certPem: string, keyPem: string, names = { svid: "the SVID", key: "the key" }): void {
  let cert: X509Certificate;
  try {
    // The first certificate of the PEM chain is the leaf, whose key this must be.
    cert = new X509Certificate(certPem);
  } catch {
    throw new HallmarkError("svid_unreadable", `${names.svid} is not a PEM certificate (svid.pem, as attest writes it)`);
  }
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    throw new HallmarkError("svid_unreadable", `${names.key} is not a PEM private key (svid.key, as attest writes it)`);
  }
  if (!matches) {
    throw new HallmarkError("svid_key_mismatch", `${names.key} is not the private key of ${names.svid}: give the svid.key written together with that svid.pem`);
  }
}

function newAgent(tls: ServerTls): Agent {
  const options = {
    keepAlive: true,
    maxSockets: tls.maxSockets ?? 64,
    ca: tls.trustBundlePem,
    rejectUnauthorized: tls.trustBundlePem !== undefined,
    cert: tls.certPem,
    key: tls.keyPem,
    checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerSpiffeId(cert, tls.serverId),
  };
  return tls.nodeProof ? new NodeProofAgent(options, tls.nodeProof) : new Agent(options);
}

/** OpenSSL's verdicts that mean "the server is not who the trust bundle says", not "unreachable". */
const TRUST_FAILURES = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
]);

/**
 * A transport error in words. A trust failure names its likely cause and the fix, and is final;
 * a TLS alert is the server refusing the handshake, also final; anything else is the way to the
 * server failing (a ConnectionFailure: the next server may be tried). `keptAlive`: it happened on
 * a reused connection before any answer.
 */
function transportError(e: NodeJS.ErrnoException, keptAlive: boolean): HallmarkError {
  if (e instanceof HallmarkError) return e;
  if (e.code && TRUST_FAILURES.has(e.code)) {
    return new HallmarkError(
      "server_untrusted",
      `the server's certificate does not verify against the trust bundle (${e.code}): the bundle most likely predates a CA rotation ` +
        "of the server; get the current one on the server's host with 'hallmark bundle show --format pem > bundle.pem' and try again",
      { cause: e },
    );
  }
  if (/does not carry/.test(e.message)) return new HallmarkError("server_untrusted", e.message, { cause: e });
  if (e.code && /^ERR_SSL_(SSLV3|TLSV1|TLSV13)_ALERT_/.test(e.code)) {
    return new HallmarkError("unavailable", `the server refused the TLS handshake (${e.code})`, { cause: e });
  }
  return new ConnectionFailure(e.code ?? e.message, keptAlive && (e.code === "ECONNRESET" || e.code === "EPIPE"), { cause: e });
}

/**
 * Admin API over the server's local Unix socket, one connection per call: a connection kept alive
 * from an earlier call may belong to a server that has since stopped (a restart on the same
 * socket path), and the request written on it would fail with EPIPE.
 */
export function adminRequest(socketPath: string, method: string, path: string, body?: unknown): Promise<ApiResponse> {
  return sendRequest((opts, cb) => httpRequest({ ...opts, socketPath, path, host: "localhost", agent: false }, cb), method, jsonBody(body), {});
}

function jsonBody(body: unknown): EncodedBody | undefined {
  return body === undefined ? undefined : { bytes: Buffer.from(JSON.stringify(body)), contentType: "application/json" };
}

type Requester = (
  opts: { method: string; headers: Record<string, string | number> },
  cb: (res: import("node:http").IncomingMessage) => void,
) => import("node:http").ClientRequest;

interface SendOptions {
  /** Headers of the caller's (a DPoP proof). */
  extraHeaders?: Record<string, string> | undefined;
  /** Over TLS: the time a new connection has to complete its handshake. */
  connectTimeoutMs?: number | undefined;
  /** Headers that depend on the connection the request was given (a node proof): the request is written only once they are known. */
  headersFor?: ((socket: Socket) => Promise<Record<string, string>>) | undefined;
}

/**
 * One request whose answer is read as JSON when it says it is; a request that gets no answer
 * fails with a ConnectionFailure (see transportError).
 */
function sendRequest(requester: Requester, method: string, body: EncodedBody | undefined, o: SendOptions): Promise<ApiResponse> {
  const payload = body?.bytes;
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = requester(
      {
        method,
        headers: {
          ...o.extraHeaders,
          accept: "application/json",
          ...(body ? { "content-type": body.contentType, "content-length": body.bytes.length } : {}),
        },
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy(new HallmarkError("unavailable", "the server's answer is too large"));
            return;
          }
          chunks.push(c);
        });
        res.on("end", () => {
          // A connection lost mid-answer ends the response too: an incomplete answer is no answer.
          if (!res.complete) return reject(new ConnectionFailure("the connection was lost during the answer"));
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown = text;
          if (text.length > 0 && /json/.test(res.headers["content-type"] ?? "")) {
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = text;
            }
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
        });
        res.on("error", (e: NodeJS.ErrnoException) => reject(transportError(e, false)));
      },
    );
    req.on("error", (e: NodeJS.ErrnoException) => reject(transportError(e, req.reusedSocket && !answered)));
    req.setTimeout(ANSWER_TIMEOUT_MS, () => req.destroy(new ConnectionFailure(`no answer in ${ANSWER_TIMEOUT_MS / 1000} s`)));
    const send = () => {
      if (payload) req.write(payload);
      req.end();
    };
    req.once("socket", (socket: Socket) => {
      if (o.connectTimeoutMs !== undefined && !req.reusedSocket) bound(socket, o.connectTimeoutMs, req);
      if (!o.headersFor) return;
      o.headersFor(socket).then(
        (headers) => {
          for (const [name, value] of Object.entries(headers)) req.setHeader(name, value);
          send();
        },
        (e: Error) => req.destroy(e),
      );
    });
    if (!o.headersFor) send();
  });
}

/** A TCP connect and TLS handshake that take longer than `ms` fail the request (a port that accepts and never answers). */
function bound(socket: Socket, ms: number, req: import("node:http").ClientRequest): void {
  const timer = setTimeout(() => req.destroy(new ConnectionFailure(`no TLS handshake in ${ms / 1000} s`)), ms);
  timer.unref();
  const done = () => clearTimeout(timer);
  socket.once("secureConnect", done);
  socket.once("close", done);
}

export function checkServerSpiffeId(cert: PeerCertificate, expected: string | undefined): Error | undefined {
  const uris = (cert.subjectaltname ?? "")
    .split(", ")
    .filter((s) => s.startsWith("URI:"))
    .map((s) => s.slice(4));
  const ok = expected ? uris.includes(expected) : uris.some(isHallmarkServerId);
  return ok ? undefined : new Error(`the server's certificate does not carry ${expected ?? "a Hallmark server SPIFFE ID"}`);
}

function isHallmarkServerId(uri: string): boolean {
  try {
    return SpiffeId.parse(uri).path === "/hallmark/server";
  } catch {
    return false;
  }
}

/** Turns a problem+json answer into a HallmarkError carrying the server's code. */
export function expectOk(res: Pick<ApiResponse, "status" | "body">, ...okStatuses: number[]): unknown {
  if ((okStatuses.length ? okStatuses : [200, 201, 204]).includes(res.status)) return res.body;
  const p = res.body as { code?: string; detail?: string; title?: string } | string;
  if (typeof p === "object" && p && typeof p.code === "string") {
    throw new HallmarkError(p.code, p.detail ?? p.title ?? `HTTP ${res.status}`);
  }
  throw new HallmarkError("unavailable", `the server answered HTTP ${res.status}`);
}
