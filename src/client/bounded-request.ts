import { type IncomingHttpHeaders, type IncomingMessage, request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import type { ConnectionOptions } from "node:tls";

/** What a bounded request answered: the status, the headers and the whole body. */
export interface BoundedAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface BoundedRequestOptions {
  method?: string;
  body?: string;
  contentType?: string;
  accept?: string;
  /** For https: the roots and identity check (`ca`, `checkServerIdentity`); default Node's roots and the host name. */
  tls?: Pick<ConnectionOptions, "ca" | "checkServerIdentity">;
  maxBytes: number;
  /** The whole exchange, connect to last byte: a server that drips bytes is cut off too. */
  timeoutMs: number;
  /** The errors the caller wants for an answer over `maxBytes` and for the deadline. */
  tooLarge?: () => Error;
  timedOut?: () => Error;
}

/**
 * One HTTP(S) request to a server we do not trust to behave: no connection reuse, no redirects
 * followed (a 3xx is an answer like any other), at most `maxBytes` of body (refused at once when
 * the declared length says more) and one deadline for everything. Network and TLS errors reject
 * as Node raised them, so each caller names them in its own codes. The one way Hallmark fetches
 * a JWKS, a foreign bundle, or the transparency log's files.
 */
export function boundedRequest(url: URL, o: BoundedRequestOptions): Promise<BoundedAnswer> {
  const payload = o.body === undefined ? undefined : Buffer.from(o.body, "utf8");
  const headers: Record<string, string | number> = {
    ...(o.accept === undefined ? {} : { accept: o.accept }),
    ...(payload ? { "content-type": o.contentType ?? "text/plain", "content-length": payload.length } : {}),
  };
  const tooLarge = o.tooLarge ?? (() => new Error(`the answer is larger than ${o.maxBytes} bytes`));
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      reject(e);
    };
    const onAnswer = (res: IncomingMessage) => {
      if (Number(res.headers["content-length"] ?? NaN) > o.maxBytes) return fail(tooLarge());
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > o.maxBytes) fail(tooLarge());
        else chunks.push(c);
      });
      res.on("error", fail);
      res.on("end", () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
    };
    const method = o.method ?? "GET";
    const req =
      url.protocol === "https:"
        ? httpsRequest(url, { method, headers, agent: false, rejectUnauthorized: true, ...o.tls }, onAnswer)
        : httpRequest(url, { method, headers, agent: false }, onAnswer);
    const timer = setTimeout(() => fail(o.timedOut?.() ?? new Error(`no complete answer within ${o.timeoutMs} ms`)), o.timeoutMs);
    req.on("error", fail);
    req.end(payload);
  });
}
