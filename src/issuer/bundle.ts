import { type KeyObject, X509Certificate, createPublicKey } from "node:crypto";
import { pemChain } from "../pki/pem.js";
import { HallmarkError } from "../errors.js";
import type { KeyType } from "../hsm/signer.js";
import { SCHEMES, jwtSchemeFor } from "./signature-formats.js";

/**
 * The trust bundle in its forms. SPIFFE bundle (SPIFFE_Trust_Domain_and_Bundle.md §4): a JWK Set
 * whose keys carry `use` "x509-svid" (with `x5c` holding exactly one certificate, and no `kid`,
 * X509-SVID §6.1), "jwt-svid" (with `kid`, JWT-SVID §6.1) or "wit-svid" (with `kid`, WIT-SVID
 * §6.1; a JWK has one `use`, so the WIT-SVID keys are keys of their own), plus `spiffe_sequence`
 * and `spiffe_refresh_hint`.
 */
export interface JwtAuthority {
  kid: string;
  publicKey: KeyObject;
  /** The JWS alg this key signs with; by default ES256/ES384 for EC keys, RS256 for RSA keys. */
  alg?: string;
}

export interface SpiffeBundle {
  x509Authorities: Buffer[];
  jwtAuthorities: JwtAuthority[];
  /** WIT-SVID signing keys (WIT-SVID §6.2: none means the trust domain does not issue WIT-SVIDs). */
  witAuthorities: JwtAuthority[];
  sequence?: number | undefined;
  refreshHintSeconds?: number | undefined;
}

export function spiffeBundleJwks(o: {
  x509Authorities: Buffer[];
  jwtAuthorities: JwtAuthority[];
  witAuthorities?: JwtAuthority[] | undefined;
  sequence: number;
  refreshHintSeconds: number;
}): Record<string, unknown> {
  const x509Keys = o.x509Authorities.map((der) => ({
    ...publicJwk(new X509Certificate(der).publicKey),
    use: "x509-svid",
    x5c: [der.toString("base64")],
  }));
  const jwtKeys = o.jwtAuthorities.map((a) => ({ ...publicJwk(a.publicKey), use: "jwt-svid", kid: a.kid }));
  const witKeys = (o.witAuthorities ?? []).map((a) => ({ ...publicJwk(a.publicKey), use: "wit-svid", kid: a.kid }));
  return { keys: [...x509Keys, ...jwtKeys, ...witKeys], spiffe_sequence: o.sequence, spiffe_refresh_hint: o.refreshHintSeconds };
}

/** A plain JWKS of the JWT-SVID keys for OIDC relying parties (`use` sig, `alg` set). */
export function jwtJwks(authorities: JwtAuthority[]): Record<string, unknown> {
  return { keys: authorities.map((a) => ({ ...publicJwk(a.publicKey), kid: a.kid, use: "sig", alg: a.alg ?? defaultAlg(a.publicKey) })) };
}

export function bundlePem(x509Authorities: Buffer[]): string {
  return pemChain(x509Authorities);
}

/**
 * OpenID Connect Discovery 1.0 §3 metadata, enough for relying parties that verify JWT-SVIDs as
 * ID tokens by issuer (the fields marked REQUIRED there; no authorization endpoint is served).
 */
export function oidcDiscoveryDocument(o: { issuer: string; jwksUri: string; algorithms?: string[] }): Record<string, unknown> {
  return {
    issuer: o.issuer,
    jwks_uri: o.jwksUri,
    authorization_endpoint: `${o.issuer.replace(/\/$/, "")}/authorize`,
    response_types_supported: ["id_token"],
    subject_types_supported: ["public"],
    id_token_signing_alg_values_supported: o.algorithms ?? ["ES256", "ES384", "RS256", "PS256"],
  };
}

export const MAX_BUNDLE_BYTES = 1024 * 1024;
const MAX_BUNDLE_KEYS = 1000;

const malformed = (why: string) => new HallmarkError("bundle_malformed", `the SPIFFE bundle is malformed: ${why}`);

/**
 * Reads a SPIFFE bundle (a foreign one, for federation, or our own in tests). Per the standard,
 * elements with an unknown `use`, an unusable key, an `x509-svid` element without `x5c`, or a
 * `jwt-svid` or `wit-svid` element without `kid` are ignored (§4.2.2; X509-SVID §6.2; JWT-SVID
 * §6.2; WIT-SVID §6.2); only the
 * first `x5c` certificate counts. The document itself must be a JSON object with a `keys` array.
 */
export function parseSpiffeBundle(input: string | Uint8Array | Record<string, unknown>): SpiffeBundle {
  let doc: unknown = input;
  if (typeof input === "string" || input instanceof Uint8Array) {
    if (input.length > MAX_BUNDLE_BYTES) throw malformed(`larger than ${MAX_BUNDLE_BYTES} bytes`);
    try {
      doc = JSON.parse(typeof input === "string" ? input : Buffer.from(input).toString("utf8"));
    } catch {
      throw malformed("not JSON");
    }
  }
  if (!isObject(doc) || !Array.isArray(doc.keys)) throw malformed("expected an object with a 'keys' array");
  if (doc.keys.length > MAX_BUNDLE_KEYS) throw malformed(`more than ${MAX_BUNDLE_KEYS} keys`);
  const sequence = optionalCount(doc.spiffe_sequence, "spiffe_sequence");
  const refreshHintSeconds = optionalCount(doc.spiffe_refresh_hint, "spiffe_refresh_hint");
  const bundle: SpiffeBundle = { x509Authorities: [], jwtAuthorities: [], witAuthorities: [], sequence, refreshHintSeconds };
  for (const key of doc.keys) {
    if (!isObject(key)) continue;
    if (key.use === "x509-svid") {
      const cert = x509Element(key);
      if (cert) bundle.x509Authorities.push(cert);
    } else if (key.use === "jwt-svid") {
      const authority = jwtElement(key);
      if (authority) bundle.jwtAuthorities.push(authority);
    } else if (key.use === "wit-svid") {
      const authority = jwtElement(key);
      if (authority) bundle.witAuthorities.push(authority);
    }
  }
  return bundle;
}

function x509Element(key: Record<string, unknown>): Buffer | undefined {
  if (!Array.isArray(key.x5c) || typeof key.x5c[0] !== "string") return undefined;
  const der = Buffer.from(key.x5c[0], "base64");
  try {
    new X509Certificate(der);
    return der;
  } catch {
    return undefined;
  }
}

function jwtElement(key: Record<string, unknown>): JwtAuthority | undefined {
  if (typeof key.kid !== "string" || key.kid.length === 0) return undefined;
  const { kty, crv, x, y, n, e } = key;
  try {
    const publicKey = createPublicKey({ key: { kty, crv, x, y, n, e } as Record<string, string>, format: "jwk" });
    if (publicKey.type !== "public") return undefined;
    return { kid: key.kid, publicKey };
  } catch {
    return undefined;
  }
}

function optionalCount(v: unknown, field: string): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw malformed(`${field} must be a non-negative integer`);
  return v as number;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function publicJwk(key: KeyObject): Record<string, unknown> {
  // Only the public members, whatever the KeyObject: a bundle never carries `d`.
  const { kty, crv, x, y, n, e } = key.export({ format: "jwk" });
  return Object.fromEntries(Object.entries({ kty, crv, x, y, n, e }).filter(([, v]) => v !== undefined));
}

function defaultAlg(key: KeyObject): string {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const keyType: KeyType = curve === "secp384r1" ? "ec-p384" : curve ? "ec-p256" : "rsa-2048";
  return SCHEMES[jwtSchemeFor(keyType)].jwsAlg;
}
