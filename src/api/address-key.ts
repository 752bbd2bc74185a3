import { isIPv6 } from "node:net";

/**
 * The key one client is counted under by the connection caps and the rate limit: its IPv4
 * address, or the /64 of its IPv6 address (one host usually holds a whole /64, so counting
 * single IPv6 addresses would let it multiply its allowance at will). IPv4-mapped IPv6 addresses
 * count as their IPv4 address, so one client is not counted twice on a dual-stack listener.
 */
export function addressKey(ip: string | undefined): string {
  if (!ip) return "unknown";
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  if (mapped?.[1]) return mapped[1];
  if (!isIPv6(ip)) return ip;
  return `${ipv6Groups(ip).slice(0, 4).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, as lowercase hex without leading zeros. */
function ipv6Groups(ip: string): string[] {
  const bare = ip.split("%")[0] ?? ip;
  const [head = "", tail] = bare.split("::");
  const groups = (part: string) => (part === "" ? [] : part.split(":").flatMap((g) => (g.includes(".") ? ["0", "0"] : [g])));
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill("0"), ...t];
  return all.map((g) => Number.parseInt(g, 16).toString(16));
}
