/**
 * The JWS algorithms Hallmark accepts on what others sign (DPoP proofs, subject tokens, access
 * tokens at a resource server): asymmetric only. `none` would accept anything, and an HMAC
 * algorithm would let a verifier be tricked into using a published public key as the shared
 * secret (the classic RS256-to-HS256 confusion), so neither may ever appear here.
 */
export const ASYMMETRIC_JWS_ALGORITHMS: readonly string[] = [
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
];

/**
 * `requested` (default: all of the above) checked against the asymmetric list: a configuration
 * naming `none` or HS256 is a programming error and fails at construction, not at the first token.
 */
export function asymmetricAlgorithms(requested?: readonly string[]): string[] {
  const algorithms = [...(requested ?? ASYMMETRIC_JWS_ALGORITHMS)];
  const refused = algorithms.filter((a) => !ASYMMETRIC_JWS_ALGORITHMS.includes(a));
  if (algorithms.length === 0 || refused.length > 0) {
    throw new Error(`JWS algorithms must be a non-empty subset of ${ASYMMETRIC_JWS_ALGORITHMS.join(", ")}; refused: ${refused.join(", ")}`);
  }
  return algorithms;
}
