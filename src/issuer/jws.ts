import type { SignatureScheme, Signer } from "../hsm/signer.js";

/**
 * A JWS in compact serialisation (RFC 7515 §7.1), signed by a Signer. JOSE libraries sign only
 * with keys they hold in memory, so tokens whose key stays in the HSM are assembled here; ECDSA
 * signers return r||s, which is exactly the JWS form (RFC 7518 §3.4).
 */
export async function signCompactJws(signer: Signer, scheme: SignatureScheme, header: object, claims: object): Promise<string> {
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = await signer.sign(Buffer.from(signingInput, "ascii"), scheme);
  return `${signingInput}.${Buffer.from(signature).toString("base64url")}`;
}

const b64url = (s: string) => Buffer.from(s, "utf8").toString("base64url");
