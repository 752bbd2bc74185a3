import { HallmarkError } from "../errors.js";

/**
 * SPIFFE IDs and trust domains, validated to the SPIFFE-ID standard (spiffe/spiffe,
 * standards/SPIFFE-ID.md): scheme `spiffe`, a trust domain of [a-z0-9.-_] only, a path of
 * segments of [A-Za-z0-9.-_], no empty, `.` or `..` segments, no trailing slash, no query,
 * fragment, port or userinfo, 2048 bytes at most. Every ID that enters Hallmark passes here.
 */

const MAX_ID_LENGTH = 2048;
const MAX_TRUST_DOMAIN_LENGTH = 255;
const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/;

export class TrustDomain {
  private constructor(readonly name: string) {}

  static parse(input: string): TrustDomain {
    if (typeof input !== "string" || input.length === 0) {
      throw new HallmarkError("invalid_trust_domain", "trust domain is empty");
    }
    if (input.length > MAX_TRUST_DOMAIN_LENGTH) {
      throw new HallmarkError("invalid_trust_domain", `trust domain is longer than ${MAX_TRUST_DOMAIN_LENGTH} characters`);
    }
    if (!TRUST_DOMAIN_CHARS.test(input)) {
      throw new HallmarkError(
        "invalid_trust_domain",
        "trust domain may contain only lowercase letters, digits, '.', '-' and '_'",
      );
    }
    return new TrustDomain(input);
  }

  /** `spiffe://<td>` */
  get idString(): string {
    return `spiffe://${this.name}`;
  }

  id(path: string): SpiffeId {
    return SpiffeId.fromParts(this, path);
  }

  equals(other: TrustDomain): boolean {
    return this.name === other.name;
  }

  toString(): string {
    return this.name;
  }
}

export class SpiffeId {
  private constructor(
    readonly trustDomain: TrustDomain,
    /** "" for the trust domain itself, else "/seg/seg". */
    readonly path: string,
  ) {}

  static parse(input: string): SpiffeId {
    const fail = (why: string): never => {
      throw new HallmarkError("invalid_spiffe_id", `invalid SPIFFE ID: ${why}`);
    };
    if (typeof input !== "string" || input.length === 0) fail("empty");
    if (Buffer.byteLength(input, "utf8") > MAX_ID_LENGTH) fail(`longer than ${MAX_ID_LENGTH} bytes`);
    const prefix = "spiffe://";
    // The scheme is case-insensitive in URIs, but SPIFFE requires the lowercase form.
    if (!input.startsWith(prefix)) fail("scheme must be 'spiffe://'");
    const rest = input.slice(prefix.length);
    const slash = rest.indexOf("/");
    const authority = slash === -1 ? rest : rest.slice(0, slash);
    const path = slash === -1 ? "" : rest.slice(slash);
    if (authority.length === 0) fail("trust domain is missing");
    if (authority.includes("@")) fail("userinfo is not allowed");
    if (authority.includes(":")) fail("a port is not allowed");
    if (!TRUST_DOMAIN_CHARS.test(authority)) {
      fail("trust domain may contain only lowercase letters, digits, '.', '-' and '_'");
    }
    if (authority.length > MAX_TRUST_DOMAIN_LENGTH) fail("trust domain is too long");
    if (/[?#]/.test(path)) fail("query and fragment are not allowed");
    validatePath(path, fail);
    return new SpiffeId(TrustDomain.parse(authority), path);
  }

  static fromParts(td: TrustDomain, path: string): SpiffeId {
    const normalized = path === "" || path.startsWith("/") ? path : `/${path}`;
    return SpiffeId.parse(`${td.idString}${normalized}`);
  }

  /** True when this ID names a workload or node in `td` (not the trust domain itself). */
  memberOf(td: TrustDomain): boolean {
    return this.trustDomain.equals(td) && this.path !== "";
  }

  toString(): string {
    return `${this.trustDomain.idString}${this.path}`;
  }

  equals(other: SpiffeId): boolean {
    return this.toString() === other.toString();
  }
}

function validatePath(path: string, fail: (why: string) => never): void {
  if (path === "") return;
  if (path.endsWith("/")) fail("trailing '/' is not allowed");
  for (const segment of path.slice(1).split("/")) {
    if (segment === "") fail("empty path segment");
    if (segment === "." || segment === "..") fail("'.' and '..' path segments are not allowed");
    if (!SEGMENT_CHARS.test(segment)) {
      fail("path segments may contain only letters, digits, '.', '-' and '_'");
    }
  }
}

/**
 * Hallmark's own namespace, `/hallmark/...`: the server's ID (`/hallmark/server`) and the IDs
 * attestors give hardware nodes (`/hallmark/agent/...`). Only the server mints IDs here; no
 * registration entry or join token may name one, or a workload could pose as the server or a node.
 */
export const HALLMARK_NAMESPACE = "/hallmark";

export function inHallmarkNamespace(id: SpiffeId): boolean {
  return id.path === HALLMARK_NAMESPACE || id.path.startsWith(`${HALLMARK_NAMESPACE}/`);
}

/** Parses an ID and requires it to belong to `td`; the refusal says which rule failed. */
export function parseMemberId(input: string, td: TrustDomain): SpiffeId {
  const id = SpiffeId.parse(input);
  if (!id.trustDomain.equals(td)) {
    throw new HallmarkError("spiffe_id_outside_trust_domain", `${id} is not in trust domain ${td.name}`);
  }
  if (id.path === "") {
    throw new HallmarkError("invalid_spiffe_id", "a workload or node ID needs a path");
  }
  return id;
}

/**
 * The trust domain a `spiffe://` URI SAN names, or undefined when the URI is not a SPIFFE ID.
 * A signing certificate's SAN is the trust domain's own ID, which some issuers write with a
 * trailing slash (`spiffe://example.com/`, as in the SPIFFE bundle standard's Appendix A):
 * that one form is read as the bare trust domain ID.
 */
export function trustDomainOfUri(uri: string): TrustDomain | undefined {
  if (!uri.startsWith("spiffe://")) return undefined;
  const bare = /^spiffe:\/\/[^/]+\/$/.test(uri) ? uri.slice(0, -1) : uri;
  try {
    return SpiffeId.parse(bare).trustDomain;
  } catch {
    return undefined;
  }
}
