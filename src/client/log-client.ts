import type { PeerCertificate } from "node:tls";
import { HallmarkError } from "../errors.js";
import { boundedRequest } from "./bounded-request.js";
import { checkServerSpiffeId, expectOk } from "./http.js";

/**
 * The transparency log's read API, for auditors (README, Transparency log): unauthenticated, and
 * everything it serves is checked against the log's key by the caller, so it may come from the
 * server itself (https, with --trust-bundle, the server's SPIFFE ID checked as for every client
 * command) or from a mirror (https with the system's roots, or plain http).
 */
export interface LogServerTls {
  /** PEM bundle the server's certificate must chain to; the system roots (and a host name check) when absent. */
  trustBundlePem?: string | undefined;
  /** The SPIFFE ID the server's certificate must carry (with trustBundlePem); any /hallmark/server when absent. */
  serverId?: string | undefined;
}

export interface RawAnswer {
  status: number;
  contentType: string;
  body: Buffer;
}

const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

/** One HTTP(S) exchange with a bounded answer and a deadline, its failures in our codes. */
export async function httpExchange(
  url: URL,
  o: { method?: string; body?: string; contentType?: string; tls?: LogServerTls; timeoutMs?: number } = {},
): Promise<RawAnswer> {
  const timeoutMs = o.timeoutMs ?? 30_000;
  try {
    const a = await boundedRequest(url, {
      method: o.method,
      body: o.body,
      contentType: o.contentType,
      tls: o.tls?.trustBundlePem ? { ca: o.tls.trustBundlePem, checkServerIdentity: (_h: string, cert: PeerCertificate) => checkServerSpiffeId(cert, o.tls?.serverId) } : undefined,
      maxBytes: MAX_ANSWER_BYTES,
      timeoutMs,
      tooLarge: () => new HallmarkError("unavailable", "the server's answer is too large"),
      timedOut: () => new HallmarkError("unavailable", `${url.host} did not answer in ${timeoutMs / 1000} s`),
    });
    return { status: a.status, contentType: a.headers["content-type"] ?? "", body: a.body };
  } catch (e) {
    if (e instanceof HallmarkError) throw e;
    const ne = e as NodeJS.ErrnoException;
    const untrusted = /certificate|self.signed|does not carry|issuer/i.test(ne.message) || /CERT|SELF_SIGNED/.test(ne.code ?? "");
    throw new HallmarkError(untrusted ? "server_untrusted" : "unavailable", `${url.host}: ${ne.code ?? ne.message}`, { cause: e });
  }
}

/** Receipt JSON as GET /v1/log/receipt/<index> answers it (src/api/log-routes.ts). */
export interface ReceiptJson {
  index: number;
  tree_size: number;
  entry: string;
  inclusion_proof: string[];
  checkpoint: string;
  tlog_proof: string;
}

export class LogClient {
  private readonly base: URL;

  constructor(
    server: string,
    private readonly tls: LogServerTls = {},
  ) {
    this.base = new URL(server.endsWith("/") ? server : `${server}/`);
  }

  private async get(path: string): Promise<RawAnswer> {
    return httpExchange(new URL(path.replace(/^\//, ""), this.base), { tls: this.tls });
  }

  /** A 200 answer's bytes; a problem+json refusal as its HallmarkError. */
  private async ok(path: string): Promise<Buffer> {
    const a = await this.get(path);
    if (a.status === 200) return a.body;
    let body: unknown = a.body.toString("utf8");
    if (/json/.test(a.contentType)) {
      try {
        body = JSON.parse(a.body.toString("utf8"));
      } catch {
        // not JSON after all: the status says it
      }
    }
    expectOk({ status: a.status, body }, 200);
    return a.body;
  }

  async verifierKey(): Promise<string> {
    return (await this.ok("/log/key")).toString("utf8").trim();
  }

  async checkpoint(): Promise<string> {
    return (await this.ok("/log/checkpoint")).toString("utf8");
  }

  async consistency(first: number, second: number): Promise<Buffer[]> {
    const j = JSON.parse((await this.ok(`/v1/log/proof/consistency?first=${first}&second=${second}`)).toString("utf8")) as { hashes: string[] };
    return j.hashes.map((h) => Buffer.from(h, "base64"));
  }

  /** The receipt of `index`, or undefined while no checkpoint covers it (tlog_not_covered). */
  async receipt(index: number): Promise<ReceiptJson | undefined> {
    try {
      return JSON.parse((await this.ok(`/v1/log/receipt/${index}`)).toString("utf8")) as ReceiptJson;
    } catch (e) {
      if (e instanceof HallmarkError && e.code === "tlog_not_covered") return undefined;
      throw e;
    }
  }

  /** An entry bundle (tlog-tiles: tile/entries/<N>[.p/<W>]). */
  async entryBundle(path: string): Promise<Buffer> {
    return this.ok(`/log/${path}`);
  }
}
