import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { LIMIT_DEFAULTS } from "../config/server.js";
import type { Witness, WitnessAnswer } from "../transparency/witness.js";
import { applyConnectionLimits } from "./connection-limits.js";

/** A checkpoint with a proof and many cosignatures is a few kB; anything far larger is not one. */
const MAX_BODY = 64 * 1024;

/**
 * The witness's HTTP interface (c2sp.org/tlog-witness): POST /add-checkpoint and GET
 * /<origin hash>/checkpoint, plain HTTP as the spec has it (put TLS in front with a proxy: a
 * witness authenticates nothing but the log's signature, and its answers are signed).
 */
export async function startWitnessHttp(witness: Witness, listen: { host: string; port: number }, log: Logger): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    void handle(witness, req, res, log);
  });
  // The public listener's deadlines and caps: a witness faces the same slow and abusive clients.
  applyConnectionLimits(server, LIMIT_DEFAULTS);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function handle(witness: Witness, req: IncomingMessage, res: ServerResponse, log: Logger): Promise<void> {
  const send = (a: WitnessAnswer) => {
    res.writeHead(a.status, { "content-type": a.contentType, "content-length": Buffer.byteLength(a.body) });
    res.end(a.body);
  };
  const text = (status: number, body: string) => send({ status, contentType: "text/plain; charset=utf-8", body });
  try {
    const url = new URL(req.url ?? "/", "http://witness");
    const get = /^\/([0-9a-f]{64})\/checkpoint$/.exec(url.pathname);
    if (req.method === "GET" && get) return send(witness.latest(get[1]!));
    if (url.pathname !== "/add-checkpoint") return text(404, "not found\n");
    if (req.method !== "POST") return text(405, "POST only\n");
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > MAX_BODY) return text(413, "the body is too large\n");
      chunks.push(c as Buffer);
    }
    const answer = await witness.addCheckpoint(Buffer.concat(chunks).toString("utf8"));
    log.info({ status: answer.status, outcome: answer.body.split("\n")[0]!.slice(0, 120) }, "witness: add-checkpoint");
    send(answer);
  } catch (e) {
    log.error({ err: e }, "witness: request failed");
    if (!res.headersSent) text(500, "internal error\n");
  }
}
