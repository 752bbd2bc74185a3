import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { type ParsedCertificate, parseCertificate } from "./certificate.js";
import { pkiError } from "./errors.js";

/**
 * Certificate path validation for evidence trust roots (TPM EK chains, the AWS Nitro chain,
 * AMD ARK/ASK/VCEK chains). @peculiar/x509's chain builder only finds issuers; this validates:
 * signatures (ECDSA, RSA PKCS#1 v1.5 and RSA-PSS via OpenSSL), issuer/subject chaining, validity
 * of every certificate at an explicit time, basicConstraints cA on issuers, pathLenConstraint,
 * keyCertSign when keyUsage is present, and unknown critical extensions (refused unless the
 * caller handles them, like the SAN of TPM EK certificates). A path must end at a pinned anchor,
 * matched by SHA-256 fingerprint, whose self-signature is checked too.
 */
export interface ChainInput {
  leaf: Uint8Array;
  /** Any order; may contain the root. */
  intermediates: readonly Uint8Array[];
  /** Pinned trust anchors. */
  anchors: readonly Uint8Array[];
  at: Date;
  handledCriticalExtensions?: readonly string[];
  maxDepth?: number;
}

export interface ValidatedChain {
  /** Leaf first, anchor last. */
  path: readonly ParsedCertificate[];
  anchorFingerprint: string;
}

/** Extensions this validator itself understands when critical. */
const UNDERSTOOD = new Set(["2.5.29.19", "2.5.29.15", "2.5.29.37"]);

export function validateChain(input: ChainInput): ValidatedChain {
  const maxDepth = input.maxDepth ?? 8;
  const anchors = input.anchors.map(parseCertificate);
  const anchorPrints = new Set(anchors.map((a) => a.fingerprint));
  const pool = [...input.intermediates.map(parseCertificate), ...anchors];
  const handled = new Set([...UNDERSTOOD, ...(input.handledCriticalExtensions ?? [])]);

  const path: ParsedCertificate[] = [parseCertificate(input.leaf)];
  for (;;) {
    const current = path[path.length - 1]!;
    checkValidity(current, input.at);
    checkCriticalExtensions(current, handled);
    if (anchorPrints.has(current.fingerprint)) {
      if (current.subject !== current.issuer || !safeVerify(current, current)) {
        throw pkiError("pki_signature_invalid", "the pinned root's self-signature does not verify");
      }
      return { path, anchorFingerprint: current.fingerprint };
    }
    if (path.length > maxDepth) throw pkiError("pki_chain_too_long", `no anchor within ${maxDepth} certificates`);
    const issuer = findIssuer(current, pool, path);
    checkIssuer(issuer, path);
    path.push(issuer);
  }
}

function findIssuer(cert: ParsedCertificate, pool: ParsedCertificate[], path: ParsedCertificate[]): ParsedCertificate {
  // Names are compared directly: OpenSSL's checkIssued also applies keyUsage, which we report separately.
  const named = pool.filter((c) => !path.includes(c) && c.subject === cert.issuer);
  if (named.length === 0) throw pkiError("pki_chain_untrusted", `no trusted issuer for ${name(cert)}`);
  const signer = named.find((c) => safeVerify(cert, c));
  if (!signer) throw pkiError("pki_signature_invalid", `the signature of ${name(cert)} does not verify`);
  return signer;
}

/**
 * Whether `issuer` signed `cert`: a pure function of the two certificates, so it is remembered per
 * pair. A new leaf under known intermediates then costs one signature check, not one per link.
 */
const verifiedLinks = new Map<string, boolean>();
const LINK_CACHE_LIMIT = 4096;

function safeVerify(cert: ParsedCertificate, issuer: ParsedCertificate): boolean {
  const key = `${cert.fingerprint}.${issuer.fingerprint}`;
  const hit = verifiedLinks.get(key);
  if (hit !== undefined) return hit;
  let ok: boolean;
  try {
    ok = cert.node.verify(issuer.publicKey);
  } catch {
    ok = false;
  }
  if (verifiedLinks.size >= LINK_CACHE_LIMIT) verifiedLinks.clear();
  verifiedLinks.set(key, ok);
  return ok;
}

function checkValidity(c: ParsedCertificate, at: Date): void {
  if (at.getTime() < c.notBefore.getTime()) throw pkiError("pki_cert_not_yet_valid", `${name(c)} is not valid before ${c.notBefore.toISOString()}`);
  if (at.getTime() > c.notAfter.getTime()) throw pkiError("pki_cert_expired", `${name(c)} expired at ${c.notAfter.toISOString()}`);
}

function checkCriticalExtensions(c: ParsedCertificate, handled: Set<string>): void {
  const unknown = c.extensions.find((e) => e.critical && !handled.has(e.oid));
  if (unknown) throw pkiError("pki_unhandled_critical_extension", `critical extension ${unknown.oid} is not understood`);
}

/** `issuer` signs the last certificate of `path`: it must be a CA allowed to sign this deep. */
function checkIssuer(issuer: ParsedCertificate, path: ParsedCertificate[]): void {
  if (!issuer.basicConstraints?.ca) throw pkiError("pki_issuer_not_ca", `${name(issuer)} is not a CA`);
  if (issuer.keyUsage !== undefined && !(issuer.keyUsage & x509.KeyUsageFlags.keyCertSign)) {
    throw pkiError("pki_key_usage_missing", `${name(issuer)} may not sign certificates`);
  }
  // pathLenConstraint counts the non-self-issued intermediates below this issuer (RFC 5280 §4.2.1.9).
  const below = path.slice(1).filter((c) => c.subject !== c.issuer).length;
  const limit = issuer.basicConstraints.pathLength;
  if (limit !== undefined && below > limit) throw pkiError("pki_path_length_exceeded", `${name(issuer)} allows ${limit} intermediates below it`);
}

const name = (c: ParsedCertificate): string => `'${c.subject.split("\n").join(", ")}'`;
