import { timeOrderedUuid } from "../time-ordered-id.js";
import type { AccessTokenSigner, SignedAccessToken } from "../service/ports.js";

/**
 * RFC 9068 JWT access tokens: the claims Hallmark puts in them, and their minting through the
 * HSM-held token key (the AccessTokenSigner port; header typ at+jwt, alg, kid).
 */

/** The namespaced claim saying how the actor's node was attested (a resource server may require hardware). */
export const ATTESTATION_CLAIM = "urn:hallmark:attestation";

/** RFC 8693 §4.1 `act`: the current actor, with the previous actor (if any) nested inside. */
export interface ActClaim {
  sub: string;
  iss?: string | undefined;
  act?: ActClaim | undefined;
}

/** What the actor's node attestation established, as the access token states it. */
export interface AttestationStatement {
  /** The node attestor type: tpm, aws_nitro, amd_sev_snp, join_token. */
  attestor: string;
  /** The node's SPIFFE ID. */
  node: string;
  /**
   * TPM nodes only: whether the node's SVID key was proven TPM-resident at attestation (a
   * TPM2_Certify: the node's selector tpm:key_resident:true). Absent for other attestors.
   */
  keyResident?: boolean | undefined;
}

export interface AccessTokenContent {
  issuer: string;
  /** The person (the subject token's `sub`). */
  subject: string;
  audience: string[];
  /** The actor: the agent's SPIFFE ID (also `client_id` and `act.sub`). */
  clientId: string;
  /** "spiffe://<trust domain>": `act.iss`. */
  actorIssuer: string;
  scope: string[];
  /** The subject token's own `act`, nested inside ours (RFC 8693 §4.1). */
  priorAct?: ActClaim | undefined;
  /** RFC 7638 thumbprint of the DPoP key: `cnf.jkt` (RFC 9449 §6.1). */
  jkt?: string | undefined;
  attestation: AttestationStatement;
  issuedAt: Date;
  expiresAt: Date;
  /** Default: a random UUID. */
  jti?: string | undefined;
}

/** The claims set of an access token (RFC 9068 §2.2, RFC 8693 §4.1, RFC 9449 §6.1). */
export function accessTokenClaims(c: AccessTokenContent): { exp: number; jti: string } & Record<string, unknown> {
  const iat = Math.floor(c.issuedAt.getTime() / 1000);
  const exp = Math.floor(c.expiresAt.getTime() / 1000);
  const act: ActClaim = { sub: c.clientId, iss: c.actorIssuer, ...(c.priorAct ? { act: c.priorAct } : {}) };
  return {
    iss: c.issuer,
    sub: c.subject,
    aud: c.audience.length === 1 ? c.audience[0] : c.audience,
    exp,
    iat,
    nbf: iat,
    jti: c.jti ?? timeOrderedUuid(),
    client_id: c.clientId,
    scope: c.scope.join(" "),
    act,
    ...(c.jkt ? { cnf: { jkt: c.jkt } } : {}),
    [ATTESTATION_CLAIM]: {
      attestor: c.attestation.attestor,
      node: c.attestation.node,
      ...(c.attestation.keyResident === undefined ? {} : { key_resident: c.attestation.keyResident }),
    },
  };
}

/** Mints an access token: the claims above, signed by the active token key in the HSM. */
export async function mintAccessToken(signer: Pick<AccessTokenSigner, "signAccessToken">, content: AccessTokenContent): Promise<SignedAccessToken & { jti: string }> {
  const claims = accessTokenClaims(content);
  return { ...(await signer.signAccessToken(claims)), jti: claims.jti };
}

/** How many `act` levels a claim nests (0 for none): bounded by delegation.maxActDepth. */
export function actDepth(act: ActClaim | undefined): number {
  let depth = 0;
  for (let a = act; a; a = a.act) depth++;
  return depth;
}
