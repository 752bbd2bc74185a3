import { X509Certificate, createPrivateKey } from "node:crypto";
import { request as httpRequest } from "node:http";
import { Agent, request as httpsRequest } from "node:https";
import type { Socket } from "node:net";
import type { PeerCertificate } from "node:tls";
import { HallmarkError } from "../errors.js";
import { SpiffeId } from "../spiffe/id.js";
import { type NodeProofKey, NodeProofAgent } from "./node-proof-agent.js";

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

export class ApiClient {
  private agent: Agent;

  constructor(
    private readonly baseUrl: URL,
    private tls: ServerTls,
  ) {
    if (baseUrl.protocol !== "https:") throw new HallmarkError("invalid_request", "the server URL must be https://");
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
   * One request with an encoded body and headers of the caller's (an OAuth form with its DPoP
   * proof). `path` may be an absolute URL (an endpoint from discovery): the server is
   * authenticated the same way whatever its host name.
   */
  send(method: string, path: string, body?: EncodedBody, headers: Record<string, string> = {}): Promise<ApiResponse> {
    const url = new URL(path, this.baseUrl);
    if (url.protocol !== "https:") return Promise.reject(new HallmarkError("invalid_request", `${url.origin} is not https://`));
    const agent = this.agent;
    return sendRequest(
      (opts, cb) => httpsRequest(url, { ...opts, agent }, cb),
      method,
      body,
      headers,
      agent instanceof NodeProofAgent ? (socket) => agent.headersFor(socket) : undefined,
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

/** A transport error in words: a trust failure names its likely cause and the fix. */
function transportError(e: NodeJS.ErrnoException): HallmarkError {
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
  return new HallmarkError("unavailable", `cannot reach the server: ${e.code ?? e.message}`, { cause: e });
}

/** Admin API over the server's local Unix socket. */
export function adminRequest(socketPath: string, method: string, path: string, body?: unknown): Promise<ApiResponse> {
  return sendRequest((opts, cb) => httpRequest({ ...opts, socketPath, path, host: "localhost" }, cb), method, jsonBody(body));
}

function jsonBody(body: unknown): EncodedBody | undefined {
  return body === undefined ? undefined : { bytes: Buffer.from(JSON.stringify(body)), contentType: "application/json" };
}

type Requester = (
  opts: { method: string; headers: Record<string, string | number> },
  cb: (res: import("node:http").IncomingMessage) => void,
) => import("node:http").ClientRequest;

/**
 * One request whose answer is read as JSON when it says it is. `headersFor` gives headers that
 * depend on the connection the request was given (a node proof): the request is written only
 * once they are known.
 */
function sendRequest(
  requester: Requester,
  method: string,
  body: EncodedBody | undefined,
  extraHeaders: Record<string, string> = {},
  headersFor?: (socket: Socket) => Promise<Record<string, string>>,
): Promise<ApiResponse> {
  const payload = body?.bytes;
  return new Promise((resolve, reject) => {
    const req = requester(
      {
        method,
        headers: {
          ...extraHeaders,
          accept: "application/json",
          ...(body ? { "content-type": body.contentType, "content-length": body.bytes.length } : {}),
        },
      },
      (res) => {
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
        res.on("error", reject);
      },
    );
    req.on("error", (e: NodeJS.ErrnoException) => reject(transportError(e)));
    req.setTimeout(30_000, () => req.destroy(new HallmarkError("unavailable", "the server did not answer in 30 s")));
    const send = () => {
      if (payload) req.write(payload);
      req.end();
    };
    if (!headersFor) return send();
    req.once("socket", (socket) => {
      headersFor(socket).then(
        (headers) => {
          for (const [name, value] of Object.entries(headers)) req.setHeader(name, value);
          send();
        },
        (e: Error) => req.destroy(e),
      );
    });
  });
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
