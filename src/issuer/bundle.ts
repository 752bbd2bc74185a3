import type { KeyObject } from "node:crypto";
import { pemChain } from "../api/pem.js";

/**
 * The trust bundle in its forms. SPIFFE bundle format (SPIFFE_Trust_Domain_and_Bundle.md §4):
 * a JWK Set whose keys carry `use` "x509-svid" (with `x5c` holding exactly one certificate, the
 * authority) or "jwt-svid" (with `kid`), plus `spiffe_sequence` and `spiffe_refresh_hint`.
 */
export interface JwtAuthority {
  kid: string;
  publicKey: KeyObject;
  alg: string;
}

export function spiffeBundleJwks(o: {
  x509Authorities: Buffer[];
  jwtAuthorities: JwtAuthority[];
  sequence: number;
  refreshHintSeconds: number;
  publicKeyOf: (certificateDer: Buffer) => KeyObject;
}): Record<string, unknown> {
  const x509Keys = o.x509Authorities.map((der) => ({
    ...publicJwk(o.publicKeyOf(der)),
    use: "x509-svid",
    x5c: [der.toString("base64")],
  }));
  const jwtKeys = o.jwtAuthorities.map((a) => ({ ...publicJwk(a.publicKey), use: "jwt-svid", kid: a.kid }));
  return { keys: [...x509Keys, ...jwtKeys], spiffe_sequence: o.sequence, spiffe_refresh_hint: o.refreshHintSeconds };
}

/** A plain JWKS of the JWT-SVID keys for OIDC relying parties (`use` sig, `alg` set). */
export function jwtJwks(authorities: JwtAuthority[]): Record<string, unknown> {
  return { keys: authorities.map((a) => ({ ...publicJwk(a.publicKey), kid: a.kid, use: "sig", alg: a.alg })) };
}

export function bundlePem(x509Authorities: Buffer[]): string {
  return pemChain(x509Authorities);
}

function publicJwk(key: KeyObject): Record<string, unknown> {
  const jwk = key.export({ format: "jwk" }) as Record<string, unknown>;
  // Only public members: a KeyObject of a public key exports nothing else, but be explicit.
  const { kty, crv, x, y, n, e } = jwk;
  return Object.fromEntries(Object.entries({ kty, crv, x, y, n, e }).filter(([, v]) => v !== undefined));
}
