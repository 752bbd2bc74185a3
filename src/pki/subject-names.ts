import { isIP } from "node:net";

/**
 * The names a certificate may carry besides its SPIFFE ID: DNS names and IP addresses (RFC 5280
 * §4.2.1.6). X509-SVID §2 requires exactly one URI SAN but allows other SAN types beside it;
 * TLS clients that connect by address (curl https://127.0.0.1:8443) check an iPAddress SAN.
 */

/** A host name, optionally a leading wildcard label; 253 characters at most, labels of 1-63. */
export const DNS_NAME = /^(?=.{1,253}$)(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * The octets of an iPAddress GeneralName: 4 for IPv4, 16 for IPv6 (an embedded dotted quad, as in
 * ::ffff:192.0.2.1, included). Undefined for anything else, zone identifiers (fe80::1%eth0) too,
 * since a certificate names an address, not an interface.
 */
export function ipAddressBytes(text: string): Buffer | undefined {
  const family = isIP(text);
  if (family === 4) return Buffer.from(text.split(".").map(Number));
  if (family !== 6 || text.includes("%")) return undefined;
  let groups = text;
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(groups);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    groups = `${groups.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = groups.split("::");
  const split = (part: string) => (part === "" ? [] : part.split(":"));
  const left = split(head);
  const right = tail === undefined ? [] : split(tail);
  const all = [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(Number.parseInt(g, 16), i * 2));
  return out;
}
