/**
 * Certificate path validation for evidence trust roots (TPM EK chains, the AWS Nitro chain,
 * AMD ARK/ASK/VCEK chains). @peculiar/x509's chain builder only finds issuers; this validates.
 *
 * CONTRACT (implemented by the PKI work; attestors code against it):
 *
 *   validateChain(input: ChainInput): ValidatedChain
 *
 * - `leaf`: DER of the end-entity certificate.
 * - `intermediates`: DER certificates in any order (may include the root; it is ignored unless pinned).
 * - `anchors`: pinned trust anchors (DER). A path must end at one of them, matched by SHA-256
 *   fingerprint of the DER, and the anchor's self-signature is checked.
 * - `at`: the verification time; every certificate on the path must be valid at it.
 * - Checks: each signature (ECDSA P-256/P-384, RSA PKCS#1 v1.5 and RSA-PSS incl. SHA-384);
 *   issuer/subject name chaining; basicConstraints cA=true on every issuer; pathLenConstraint;
 *   keyUsage keyCertSign on issuers when keyUsage is present; unknown critical extensions
 *   refuse unless listed in `handledCriticalExtensions` (e.g. the SAN on TPM EK certificates).
 * - Refusals throw HallmarkError with a PKI_ERRORS code (src/pki/errors.ts).
 * - Returns the path leaf-first plus the anchor's fingerprint, for audit.
 */
export {};
