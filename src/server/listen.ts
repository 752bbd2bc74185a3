import type { Server } from "node:net";
import { HallmarkError } from "../errors.js";

export function splitHostPort(listen: string): [string, number] {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(listen);
  if (!m) throw new HallmarkError("config_invalid", `listen: '${listen}' must be HOST:PORT`);
  const port = Number(m[2]);
  if (port > 65535) throw new HallmarkError("config_invalid", `listen: port ${port} is out of range`);
  return [m[1] ?? "127.0.0.1", port];
}

/** https://host:port as actually bound: port 0 resolves to the port the kernel chose. */
export function boundHttpsUrl(server: Server, host: string, port: number): string {
  const address = server.address();
  const boundPort = typeof address === "object" && address ? address.port : port;
  return `https://${host.includes(":") ? `[${host}]` : host}:${boundPort}`;
}
