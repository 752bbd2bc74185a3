import { type JWTPayload, type JWTVerifyGetKey, jwtVerify } from "jose";
import { HallmarkError } from "../errors.js";
import { ASYMMETRIC_JWS_ALGORITHMS } from "./algorithms.js";
import { type DpopNonceSource, type DpopReplayCache, DpopVerifier, MemoryDpopReplayCache } from "./dpop.js";
import { oauthError } from "./errors.js";

/**
 * What a resource server outside Hallmark runs on each request (RFC 6750, RFC 9449 §7, RFC 9068
 * §4): the access token verified against the published JWKS, and, when the token is DPoP-bound
 * (cnf.jkt), the request's DPoP proof for this method, URL, token and key. A bound token
 * presented as Bearer is refused: that is the whole point of binding it.
 */

export interface AccessTokenClaims extends JWTPayload {
  iss: string;
  sub: string;
  exp: number;
  scope?: string;
  client_id?: string;
  act?: { sub: string; iss?: string; act?: unknown };
  cnf?: { jkt?: string };
}

export interface DpopBoundRequest {
  /** The Authorization header: `DPoP <token>` or `Bearer <token>`. */
  authorization: string | undefined;
  /** The DPoP header value(s), as the HTTP layer gives them. */
  dpop: string | string[] | undefined;
  method: string;
  /** The URL the client addressed (scheme://host[:port]/path[?query]). */
  url: string;
  /** The authorization server's keys, e.g. createRemoteJWKSet(new URL(jwks_uri)). */
  jwks: JWTVerifyGetKey;
  issuer: string;
  /** This resource server's identifier(s): the token's aud must contain one. */
  audience: string | string[];
  /** Default: one in-memory cache shared by every call in this process. */
  replay?: DpopReplayCache | undefined;
  nonces?: DpopNonceSource | undefined;
  /** How far a proof's iat may be from now, either way (default 60 s). */
  iatWindowSeconds?: number | undefined;
  now?: Date | undefined;
}

let processReplayCache: MemoryDpopReplayCache | undefined;
const AUTHORIZATION = /^(DPoP|Bearer) ([A-Za-z0-9\-._~+/]+=*)$/i;
/** Access tokens are a few KiB at most; a huge one is refused before it is parsed. */
const MAX_ACCESS_TOKEN_CHARS = 16 * 1024;

const invalidToken = (why: string, internal?: string) => oauthError("access_token_invalid", `the access token ${why}`, internal === undefined ? {} : { internal });

/** Verifies the access token (and its DPoP proof when it is bound, or when it was sent as DPoP) and answers its claims. */
export async function verifyDpopBoundRequest(r: DpopBoundRequest): Promise<AccessTokenClaims> {
  const now = r.now ?? new Date();
  const m = AUTHORIZATION.exec(r.authorization ?? "");
  if (!m || (m[2] as string).length > MAX_ACCESS_TOKEN_CHARS) throw invalidToken("is missing: send Authorization: DPoP <token>");
  const scheme = (m[1] as string).toLowerCase() === "dpop" ? "DPoP" : "Bearer";
  const token = m[2] as string;

  let claims: AccessTokenClaims;
  try {
    ({ payload: claims } = (await jwtVerify(token, r.jwks, {
      issuer: r.issuer,
      audience: r.audience,
      // RFC 9068 §4: the typ tells an access token from an ID token or JWT-SVID signed by the same issuer.
      typ: "at+jwt",
      algorithms: [...ASYMMETRIC_JWS_ALGORITHMS],
      currentDate: now,
      requiredClaims: ["iss", "sub", "exp", "aud"],
    })) as { payload: AccessTokenClaims });
  } catch (e) {
    if (e instanceof HallmarkError) throw e;
    const err = e as { code?: string; message?: string };
    throw invalidToken(err.code === "ERR_JWT_EXPIRED" ? "has expired" : "does not verify", `${err.code ?? ""} ${err.message ?? ""}`.trim());
  }
  const cnf = claims.cnf;
  if (cnf !== undefined && (typeof cnf !== "object" || cnf === null || (cnf.jkt !== undefined && typeof cnf.jkt !== "string"))) throw invalidToken("has a malformed cnf claim");
  const jkt = cnf?.jkt;

  if (jkt !== undefined && scheme !== "DPoP") {
    throw oauthError("access_token_dpop_bound", "the access token is DPoP-bound: present it as Authorization: DPoP with a DPoP proof");
  }
  if (scheme === "DPoP") {
    // An unbound token sent as DPoP is fine, as long as the proof holds for it (RFC 9449 §7.1).
    await dpopVerifier(r).verify({ header: r.dpop, method: r.method, url: r.url, accessToken: token, expectedJkt: jkt, now });
  }
  return claims;
}

function dpopVerifier(r: DpopBoundRequest): DpopVerifier {
  return new DpopVerifier({
    replay: r.replay ?? (processReplayCache ??= new MemoryDpopReplayCache()),
    iatWindowSeconds: r.iatWindowSeconds ?? 60,
    nonces: r.nonces,
  });
}
