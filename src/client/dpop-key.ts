import { type KeyObject, createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID } from "node:crypto";
import { type CryptoKey, type JWK, SignJWT, calculateJwkThumbprint, exportJWK } from "jose";
import { HallmarkError } from "../errors.js";

/**
 * The agent's DPoP key (RFC 9449) and the proofs it signs. The key is the agent's own: the access
 * token is bound to its thumbprint (cnf.jkt), so whoever holds the token without this key holds
 * nothing. Kept on disk as PEM PKCS#8 (what openssl and every language read), EC P-256 by default.
 */

/** A private key as Node holds it (a PEM file), or a WebCrypto pair (jose's generateKeyPair). */
export type DpopKeyInput = KeyObject | { privateKey: CryptoKey; publicKey: CryptoKey };

/** The JWS algorithm each key type signs proofs with: one per key, so the proof's alg is never a choice an attacker sees vary. */
const EC_ALGORITHMS: Readonly<Record<string, string>> = { "P-256": "ES256", "P-384": "ES384", "P-521": "ES512" };

export class DpopKey {
  private constructor(
    private readonly privateKey: KeyObject | CryptoKey,
    /** The public key as the proof header carries it: public members only. */
    readonly jwk: JWK,
    readonly alg: string,
    /** RFC 7638 SHA-256 thumbprint: the token's cnf.jkt. */
    readonly jkt: string,
  ) {}

  /** `source` names the key in errors (a flag and a path). */
  static async from(key: DpopKeyInput, source = "the DPoP key"): Promise<DpopKey> {
    const [privateKey, publicJwk] =
      "privateKey" in key
        ? [key.privateKey, await exportJWK(key.publicKey)]
        : [key, key.type === "private" ? (createPublicKey(key).export({ format: "jwk" }) as JWK) : undefined];
    if (!publicJwk || ("type" in privateKey && privateKey.type !== "private")) throw unreadable(`${source} is not a private key`);
    const alg = algorithmOf(publicJwk, source);
    // Only the members RFC 7638 and the verifier need: never anything else the export carried.
    const jwk: JWK =
      publicJwk.kty === "EC" ? { kty: "EC", crv: publicJwk.crv, x: publicJwk.x, y: publicJwk.y } : { kty: "OKP", crv: publicJwk.crv, x: publicJwk.x };
    return new DpopKey(privateKey, jwk, alg, await calculateJwkThumbprint(jwk, "sha256"));
  }

  /** A key read from a PEM PKCS#8 (or SEC1) private key: `source` names it in errors (a flag and a path). */
  static async fromPem(pem: string | Buffer, source = "the DPoP key"): Promise<DpopKey> {
    let key: KeyObject;
    try {
      key = createPrivateKey(pem);
    } catch {
      throw unreadable(`${source} is not a PEM private key (PKCS#8, as --dpop-key-out writes it)`);
    }
    return DpopKey.from(key, source);
  }

  /** A fresh EC P-256 key, and its PEM PKCS#8 for whoever must keep it. */
  static async generate(): Promise<{ key: DpopKey; pem: string }> {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    return { key: await DpopKey.from(privateKey), pem: privateKey.export({ type: "pkcs8", format: "pem" }).toString() };
  }

  /**
   * One proof (RFC 9449 §4.2) for a request: `htu` without query and fragment (§4.3 compares only
   * scheme, authority and path), a fresh jti, `ath` when it accompanies an access token (§7.1),
   * and the server's nonce when it gave one (§8).
   */
  proof(o: { htm: string; htu: string; nonce?: string | undefined; accessToken?: string | undefined; now?: Date | undefined }): Promise<string> {
    const htu = new URL(o.htu);
    htu.search = "";
    htu.hash = "";
    const claims: Record<string, unknown> = { jti: randomUUID(), htm: o.htm, htu: htu.toString(), iat: Math.floor((o.now ?? new Date()).getTime() / 1000) };
    if (o.nonce !== undefined) claims.nonce = o.nonce;
    if (o.accessToken !== undefined) claims.ath = createHash("sha256").update(o.accessToken, "ascii").digest("base64url");
    return new SignJWT(claims).setProtectedHeader({ typ: "dpop+jwt", alg: this.alg, jwk: this.jwk }).sign(this.privateKey);
  }
}

function algorithmOf(jwk: JWK, source: string): string {
  if (jwk.kty === "EC" && jwk.crv && EC_ALGORITHMS[jwk.crv]) return EC_ALGORITHMS[jwk.crv] as string;
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519") return "EdDSA";
  throw unreadable(`${source} is a ${[jwk.kty, jwk.crv].filter(Boolean).join(" ")} key: a DPoP key must be EC (P-256, P-384, P-521) or Ed25519`);
}

const unreadable = (why: string) => new HallmarkError("dpop_key_unreadable", why);
