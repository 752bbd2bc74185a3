import { request } from "node:https";

export interface HttpsResult {
  status: number;
  contentType: string;
  body: unknown;
  text: string;
}

/** One raw HTTPS request (any body bytes, any headers), for testing what the API refuses. */
export function httpsRaw(
  url: string,
  opts: { method?: string; body?: string | Buffer; headers?: Record<string, string>; ca?: string; cert?: string; key?: string } = {},
): Promise<HttpsResult> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: opts.method ?? "GET",
        headers: opts.headers,
        ca: opts.ca,
        cert: opts.cert,
        key: opts.key,
        rejectUnauthorized: opts.ca !== undefined,
        checkServerIdentity: () => undefined,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            /* not JSON: keep the text */
          }
          resolve({ status: res.statusCode ?? 0, contentType: String(res.headers["content-type"] ?? ""), body, text });
        });
      },
    );
    req.on("error", reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

export function postJson(url: string, body: unknown, extra: { ca?: string; cert?: string; key?: string } = {}): Promise<HttpsResult> {
  return httpsRaw(url, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" }, ...extra });
}

/**
 * A fetch (enough of it for jose's createRemoteJWKSet `customFetch`, and for discovery) that
 * trusts `ca` alone and checks the server's name the default way: the certificate must name the
 * host of the URL (an IP SAN for https://127.0.0.1). Node 20's global fetch takes no CA option.
 */
export function fetchTrusting(ca: string): (url: string, init?: { headers?: Headers; signal?: AbortSignal }) => Promise<Response> {
  return (url, init) =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = {};
      init?.headers?.forEach((v, k) => (headers[k] = v));
      const req = request(url, { ca, headers, agent: false, ...(init?.signal ? { signal: init.signal } : {}) }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve(new Response(Buffer.concat(chunks), { status: res.statusCode ?? 0, headers: { "content-type": String(res.headers["content-type"] ?? "") } })),
        );
      });
      req.on("error", reject);
      req.end();
    });
}
