import { HallmarkError } from "../errors.js";
import type { SignatureScheme, Signer } from "../hsm/signer.js";
import type { SpiffeId } from "../spiffe/id.js";
import { signCompactJws } from "./jws.js";
import { SCHEMES, jwtSchemeFor } from "./signature-formats.js";
import { requireTtl } from "./validity.js";

export const MAX_AUDIENCES = 16;
export const MAX_AUDIENCE_LENGTH = 512;
/** The default ceiling on a JWT-SVID's life (JWT-SVID §3 asks for short-lived tokens; bearer tokens leak). */
export const DEFAULT_MAX_JWT_TTL_SECONDS = 86400;

/**
 * What an audience may not contain. An audience is shown to people (logs, audit, token dumps) and
 * compared by relying parties, so nothing in it may hide or reorder what it appears to say:
 * controls (Cc: C0, DEL, C1), invisible format characters (Cf, which holds every bidirectional
 * control: U+061C, U+200E/F, U+202A-E, U+2066-9, and zero-width ones), lone surrogates (Cs: not
 * Unicode text at all) and the line/paragraph separators (Zl, Zp). Other text, including non-ASCII
 * letters in any normalisation form, is the caller's business: relying parties match it exactly.
 */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/u;
const printable = (s: string): boolean => !UNPRINTABLE.test(s);

/** Audiences: 1..16 distinct non-empty printable strings of at most 512 characters. */
export function validateAudience(audience: unknown): string[] {
  const ok =
    Array.isArray(audience) &&
    audience.length > 0 &&
    audience.length <= MAX_AUDIENCES &&
    new Set(audience).size === audience.length &&
    audience.every((a) => typeof a === "string" && a.length > 0 && a.length <= MAX_AUDIENCE_LENGTH && printable(a));
  if (!ok) {
    throw new HallmarkError(
      "invalid_audience",
      `the audience must be 1 to ${MAX_AUDIENCES} distinct non-empty strings of at most ${MAX_AUDIENCE_LENGTH} printable characters`,
    );
  }
  return audience as string[];
}

/**
 * A JWT-SVID (spiffe/spiffe standards/JWT-SVID.md): JWS compact serialisation with `alg` and `kid`
 * in the header (§2; `typ` JWT is allowed) and `sub`, `aud`, `exp` in the claims (§3; `iat`
 * added). `iss`, when given, is the OIDC discovery document's issuer: JWT-SVID §3 leaves other
 * registered claims optional, but OIDC federation relying parties (AWS, GCP, Vault) match `iss`
 * against the issuer they discovered the JWKS from and refuse a token without one. Signed by
 * signCompactJws around the HSM Signer.
 */
export async function mintJwtSvid(o: {
  signer: Signer;
  kid: string;
  spiffeId: SpiffeId;
  audience: string[];
  ttlSeconds: number;
  now: Date;
  /** The `iss` claim: the issuer of the OIDC discovery document that publishes this key. */
  issuer?: string | undefined;
  /** The `jti` claim (JWT-SVID §3 allows it): names the issuance record. */
  jti?: string | undefined;
  /** Default: ES256/ES384 for EC keys, RS256 for RSA keys. */
  scheme?: SignatureScheme;
  maxTtlSeconds?: number;
}): Promise<{ token: string; expiresAt: Date }> {
  const audience = validateAudience(o.audience);
  requireTtl(o.ttlSeconds, o.maxTtlSeconds ?? DEFAULT_MAX_JWT_TTL_SECONDS);
  if (o.spiffeId.path === "") throw new HallmarkError("invalid_spiffe_id", "a JWT-SVID subject needs a path");
  if (o.kid.length === 0) throw new HallmarkError("ca_not_ready", "the JWT key has no kid");
  const scheme = o.scheme ?? jwtSchemeFor(o.signer.keyType);
  const iat = Math.floor(o.now.getTime() / 1000);
  const exp = iat + o.ttlSeconds;
  const header = { alg: SCHEMES[scheme].jwsAlg, kid: o.kid, typ: "JWT" };
  const claims = {
    ...(o.issuer === undefined ? {} : { iss: o.issuer }),
    sub: o.spiffeId.toString(),
    aud: audience.length === 1 ? audience[0] : audience,
    exp,
    iat,
    ...(o.jti === undefined ? {} : { jti: o.jti }),
  };
  return { token: await signCompactJws(o.signer, scheme, header, claims), expiresAt: new Date(exp * 1000) };
}
