import type { Signer, SignatureScheme } from "../hsm/signer.js";
import type { SpiffeId } from "../spiffe/id.js";
import { SCHEMES } from "./signature-formats.js";

/**
 * A JWT-SVID (spiffe/spiffe standards/JWT-SVID.md): a JWS compact serialisation with `alg` and
 * `kid` in the header (§2.1, §2.2; `typ` JWT is allowed) and `sub`, `aud`, `exp` in the claims
 * (§3; `iat` added). Assembled here around the Signer, since JOSE libraries sign only with keys
 * they hold in memory; ECDSA signers return r||s, which is exactly the JWS form.
 */
export async function mintJwtSvid(o: {
  signer: Signer;
  scheme: SignatureScheme;
  kid: string;
  spiffeId: SpiffeId;
  audience: string[];
  ttlSeconds: number;
  now: Date;
}): Promise<{ token: string; expiresAt: Date }> {
  const iat = Math.floor(o.now.getTime() / 1000);
  const exp = iat + o.ttlSeconds;
  const header = { alg: SCHEMES[o.scheme].jwsAlg, kid: o.kid, typ: "JWT" };
  const claims = { sub: o.spiffeId.toString(), aud: o.audience.length === 1 ? o.audience[0] : o.audience, exp, iat };
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = await o.signer.sign(Buffer.from(signingInput, "ascii"), o.scheme);
  return { token: `${signingInput}.${Buffer.from(signature).toString("base64url")}`, expiresAt: new Date(exp * 1000) };
}

const b64url = (s: string) => Buffer.from(s, "utf8").toString("base64url");
