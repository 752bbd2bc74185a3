import { request } from "node:https";

/**
 * A `fetch` for OAuth clients (oauth4webapi's customFetch, jose's createRemoteJWKSet) that trusts
 * `ca` alone (the Hallmark bundle) and checks the server's name the default way, with an optional
 * client certificate (mutual TLS with an X509-SVID). Unlike fetchTrusting it sends any method and
 * body and returns every response header (DPoP-Nonce, WWW-Authenticate, Cache-Control).
 */
export function bundleFetch(ca: string, client: { cert?: string; key?: string } = {}) {
  return (url: string | URL, init: { method?: string; headers?: ConstructorParameters<typeof Headers>[0]; body?: unknown; signal?: AbortSignal | null } = {}): Promise<Response> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = {};
      new Headers(init.headers).forEach((v, k) => (headers[k] = v));
      const body = init.body === undefined || init.body === null ? undefined : init.body instanceof URLSearchParams ? init.body.toString() : String(init.body);
      if (body !== undefined && init.body instanceof URLSearchParams && !headers["content-type"]) headers["content-type"] = "application/x-www-form-urlencoded;charset=UTF-8";
      const req = request(
        url,
        { method: init.method ?? "GET", ca, headers, agent: false, ...client, ...(init.signal ? { signal: init.signal } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const out = new Headers();
            for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out.set(k, Array.isArray(v) ? v.join(", ") : v);
            const status = res.statusCode ?? 0;
            resolve(new Response(status === 204 || status === 304 ? null : Buffer.concat(chunks), { status, headers: out }));
          });
        },
      );
      req.on("error", reject);
      if (body !== undefined) req.write(body);
      req.end();
    });
}
