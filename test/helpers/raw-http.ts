import { type Socket, connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The whole answer as received, for failure messages. */
  raw: string;
}

/**
 * Where to send raw bytes: a listener by URL (TLS for https:, plain TCP for http:) or a Unix
 * socket speaking plain HTTP/1.1.
 */
export type RawTarget = { url: string } | { socketPath: string };

/**
 * Sends `bytes` exactly as given over a fresh connection and reads until the server closes it:
 * the requests that matter here are ones no HTTP client library would write (a bad method, a bad
 * escape, a 20 KB header, CONNECT). Send `Connection: close` in well-formed requests.
 */
export async function rawExchange(target: RawTarget, bytes: string | Buffer): Promise<RawResponse> {
  const { raw, error } = await rawUntilClosed(target, bytes);
  if (raw === "" && error) throw error;
  const split = raw.indexOf("\r\n\r\n");
  if (split < 0) throw new Error(`no HTTP answer: ${JSON.stringify(raw)}`);
  const [statusLine = "", ...lines] = raw.slice(0, split).split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine.split(" ")[1]), headers, body: raw.slice(split + 4), raw };
}

/**
 * Sends `bytes` over a fresh connection and resolves with everything the server sent once it
 * closes the connection, however it closes it (a reset included: `error`). For floods the server
 * is expected to cut off, where there may be no answer at all.
 */
export function rawUntilClosed(target: RawTarget, bytes: string | Buffer): Promise<{ raw: string; error?: Error }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: Error | undefined;
    let socket: Socket;
    const send = () => socket.write(bytes);
    if ("url" in target) {
      const u = new URL(target.url);
      socket =
        u.protocol === "http:"
          ? netConnect({ host: u.hostname, port: Number(u.port) }, send)
          : tlsConnect({ host: u.hostname, port: Number(u.port), rejectUnauthorized: false, servername: "localhost" }, send);
    } else {
      socket = netConnect({ path: target.socketPath }, send);
    }
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", (e) => (error ??= e));
    socket.on("close", () => resolve({ raw: Buffer.concat(chunks).toString("utf8"), ...(error ? { error } : {}) }));
  });
}
