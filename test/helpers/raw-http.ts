import { type Socket, connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The whole answer as received, for failure messages. */
  raw: string;
}

/** Where to send raw bytes: an HTTPS listener (URL) or a Unix socket speaking plain HTTP/1.1. */
export type RawTarget = { url: string } | { socketPath: string };

/**
 * Sends `bytes` exactly as given over a fresh connection and reads until the server closes it:
 * the requests that matter here are ones no HTTP client library would write (a bad method, a bad
 * escape, a 20 KB header, CONNECT). Send `Connection: close` in well-formed requests.
 */
export function rawExchange(target: RawTarget, bytes: string | Buffer): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let socket: Socket;
    const send = () => socket.write(bytes);
    if ("url" in target) {
      const u = new URL(target.url);
      socket = tlsConnect({ host: u.hostname, port: Number(u.port), rejectUnauthorized: false, servername: "localhost" }, send);
    } else {
      socket = netConnect({ path: target.socketPath }, send);
    }
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", (e) => (chunks.length ? undefined : reject(e)));
    socket.on("close", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      const split = raw.indexOf("\r\n\r\n");
      if (split < 0) return reject(new Error(`no HTTP answer: ${JSON.stringify(raw)}`));
      const [statusLine = "", ...lines] = raw.slice(0, split).split("\r\n");
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(":");
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ status: Number(statusLine.split(" ")[1]), headers, body: raw.slice(split + 4), raw });
    });
  });
}
