import { createPublicKey, type JsonWebKey } from "node:crypto";
import { HallmarkError } from "../errors.js";
import { timeOrderedUuid } from "../time-ordered-id.js";
import type { SignatureScheme, Signer } from "../hsm/signer.js";
import type { SpiffeId } from "../spiffe/id.js";
import { signCompactJws } from "./jws.js";
import { SCHEMES } from "./signature-formats.js";
import { requireTtl } from "./validity.js";

/** The default ceiling on a WIT-SVID's life, as for other SVIDs (WIT-SVID §3.4 sets no limit). */
export const DEFAULT_MAX_WIT_TTL_SECONDS = 86400;

/**
 * WIT-SVID §2.3 and §3.2: the only algorithms a WIT-SVID may be signed with, and the only values
 * of `cnf.jwk.alg`; each with the key it needs. EdDSA is not among them: an Ed25519 key is refused.
 */
const WIT_ALGS: Readonly<Record<string, { kty: "EC"; crv: string } | { kty: "RSA" }>> = {
  ES256: { kty: "EC", crv: "P-256" },
  ES384: { kty: "EC", crv: "P-384" },
  ES512: { kty: "EC", crv: "P-521" },
  RS256: { kty: "RSA" },
  RS384: { kty: "RSA" },
  RS512: { kty: "RSA" },
  PS256: { kty: "RSA" },
  PS384: { kty: "RSA" },
  PS512: { kty: "RSA" },
};

/** RSA moduli we bind: at least 2048 bits (NIST SP 800-131A), at most 8192 (bounds the work of parsing). */
const MIN_RSA_BITS = 2048;
const MAX_RSA_BITS = 8192;
/** Members that make a JWK private (RFC 7518 §6.2.2, §6.3.2, §6.4.1): never accepted, never echoed. */
export const PRIVATE_JWK_MEMBERS: readonly string[] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
const KEY_MEMBERS = { EC: ["crv", "x", "y"], RSA: ["n", "e"] } as const;
/** Optional members kept as sent: a `kid` the workload names its key by, and `use` "sig". */
const KID = /^[A-Za-z0-9._~-]{1,128}$/;
const MAX_MEMBER_CHARS = 2048;

/** A workload's public key as a WIT-SVID's `cnf.jwk` carries it: validated, public members only, `alg` set. */
export type WitPublicJwk = Readonly<Record<string, string>>;

const malformed = (why: string) => new HallmarkError("wit_key_malformed", `public_key_jwk: ${why}`);
const unsupported = (why: string) => new HallmarkError("wit_key_unsupported", `public_key_jwk: ${why}`);

/**
 * Checks the public key a workload wants bound into its WIT-SVID, strictly: a JSON object of
 * strings; no private member (`wit_key_private`: a key sent with its private half must be treated
 * as leaked by the caller, and we never sign it); an `alg` from the standard's list that fits the
 * key (EC on the alg's curve, RSA of 2048-8192 bits); the key members in their one canonical
 * encoding (the point on the curve, no leading zeros), so `cnf.jwk` is exactly what was sent.
 */
export function validateWitPublicJwk(input: unknown): WitPublicJwk {
  if (typeof input !== "object" || input === null || Array.isArray(input)) throw malformed("expected a JSON object (a JWK)");
  const jwk = input as Record<string, unknown>;
  const leaked = PRIVATE_JWK_MEMBERS.filter((m) => m in jwk);
  if (leaked.length) throw new HallmarkError("wit_key_private", `public_key_jwk carries private members (${leaked.join(", ")}): send the public key only`);
  for (const [name, value] of Object.entries(jwk)) {
    if (typeof value !== "string" || value.length === 0 || value.length > MAX_MEMBER_CHARS) throw malformed(`member '${name.slice(0, 32)}' must be a non-empty string`);
  }
  const { kty, alg } = jwk as Record<string, string | undefined>;
  if (kty !== "EC" && kty !== "RSA") throw unsupported(`kty must be EC or RSA (the WIT-SVID algorithms), not ${String(kty).slice(0, 16)}`);
  const allowed = new Set<string>(["kty", "alg", "kid", "use", ...KEY_MEMBERS[kty]]);
  const unknown = Object.keys(jwk).filter((m) => !allowed.has(m));
  if (unknown.length) throw malformed(`unexpected members for a ${kty} public key: ${unknown.map((m) => m.slice(0, 32)).join(", ")}`);
  if (alg === undefined) throw malformed("alg is required (WIT-SVID §3.2: cnf.jwk.alg)");
  const wants = WIT_ALGS[alg];
  if (!wants) throw unsupported(`alg ${alg.slice(0, 16)} is not one of ${Object.keys(WIT_ALGS).join(", ")}`);
  if (wants.kty !== kty) throw unsupported(`alg ${alg} needs a ${wants.kty} key, not ${kty}`);
  if (wants.kty === "EC" && jwk.crv !== wants.crv) throw unsupported(`alg ${alg} needs curve ${wants.crv}, not ${String(jwk.crv).slice(0, 16)}`);
  if (jwk.use !== undefined && jwk.use !== "sig") throw malformed("use, when present, must be sig");
  if (jwk.kid !== undefined && !KID.test(jwk.kid as string)) throw malformed("kid must be 1-128 characters of A-Z a-z 0-9 . _ ~ -");

  const members = Object.fromEntries(KEY_MEMBERS[kty].map((m) => [m, jwk[m] as string | undefined]));
  for (const [m, v] of Object.entries(members)) if (v === undefined) throw malformed(`${m} is required for a ${kty} key`);
  let canonical: JsonWebKey;
  let details: ReturnType<typeof createPublicKey>["asymmetricKeyDetails"];
  try {
    const key = createPublicKey({ key: { kty, ...members } as JsonWebKey, format: "jwk" });
    canonical = key.export({ format: "jwk" });
    details = key.asymmetricKeyDetails;
  } catch {
    throw malformed(kty === "EC" ? "not a point on the curve" : "not an RSA public key");
  }
  for (const [m, v] of Object.entries(members)) {
    if (canonical[m as keyof JsonWebKey] !== v) throw malformed(`${m} is not in its canonical base64url encoding (RFC 7518 §6)`);
  }
  if (kty === "RSA") {
    const bits = details?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS) throw unsupported(`an RSA key of ${bits} bits (${MIN_RSA_BITS} to ${MAX_RSA_BITS} accepted)`);
    const e = details?.publicExponent ?? 0n;
    if (e < 3n || e % 2n === 0n) throw unsupported("the RSA public exponent must be odd and at least 3");
  }
  return Object.freeze({ ...(jwk as Record<string, string>) });
}

/**
 * A WIT-SVID (spiffe/spiffe standards/WIT-SVID.md): a JWT whose header is exactly `alg`, `kid`
 * and `typ` wit+jwt (§2; no other header parameters, §2.4), whose claims are `sub` (the SPIFFE
 * ID), `cnf.jwk` (the workload's public key, with its `alg`), `exp`, and the MAY claims `iat`,
 * `nbf` and a random `jti` (§3.3: lets an audit record name one token). No `aud` (§3.8 forbids
 * it) and no `iss` (§3.7 advises against an OIDC-compatible one, and the `sub` names the trust
 * domain already), so an OIDC relying party cannot mistake it for a bearer token.
 */
export async function mintWitSvid(o: {
  signer: Signer;
  scheme: SignatureScheme;
  kid: string;
  spiffeId: SpiffeId;
  publicKey: unknown;
  ttlSeconds: number;
  now: Date;
  maxTtlSeconds?: number | undefined;
}): Promise<{ token: string; expiresAt: Date; jti: string }> {
  const jwk = validateWitPublicJwk(o.publicKey);
  requireTtl(o.ttlSeconds, o.maxTtlSeconds ?? DEFAULT_MAX_WIT_TTL_SECONDS);
  if (o.spiffeId.path === "") throw new HallmarkError("invalid_spiffe_id", "a WIT-SVID subject needs a path");
  if (o.kid.length === 0) throw new HallmarkError("ca_not_ready", "the WIT key has no kid");
  const alg = SCHEMES[o.scheme].jwsAlg;
  if (!WIT_ALGS[alg]) throw new HallmarkError("ca_not_ready", `the WIT key signs ${alg}, which WIT-SVID §2.3 does not allow`);
  const iat = Math.floor(o.now.getTime() / 1000);
  const exp = iat + o.ttlSeconds;
  const jti = timeOrderedUuid();
  const header = { alg, kid: o.kid, typ: "wit+jwt" };
  const claims = { sub: o.spiffeId.toString(), cnf: { jwk }, exp, iat, nbf: iat, jti };
  return { token: await signCompactJws(o.signer, o.scheme, header, claims), expiresAt: new Date(exp * 1000), jti };
}
