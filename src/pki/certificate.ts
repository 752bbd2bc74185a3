import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { type KeyObject, X509Certificate, createHash } from "node:crypto";
import { HallmarkError } from "../errors.js";
import { pkiError } from "./errors.js";

/** What path validation needs from one certificate, parsed once. */
export interface ParsedCertificate {
  der: Buffer;
  node: X509Certificate;
  fingerprint: string;
  subject: string;
  issuer: string;
  notBefore: Date;
  notAfter: Date;
  publicKey: KeyObject;
  basicConstraints?: { ca: boolean; pathLength?: number | undefined } | undefined;
  /** KeyUsage bit flags (@peculiar/x509 KeyUsageFlags), when the extension is present. */
  keyUsage?: number | undefined;
  extensions: Array<{ oid: string; critical: boolean; value: Buffer }>;
}

export function sha256Fingerprint(der: Uint8Array): string {
  return createHash("sha256").update(der).digest("hex");
}

/** "64:1A:03:…" or hex → lowercase hex without separators. */
export function parseFingerprint(s: string): string {
  return s.replace(/[:\s]/g, "").toLowerCase();
}

const cache = new Map<string, ParsedCertificate>();
const CACHE_LIMIT = 1024;

/** Parses a DER certificate (memoised by fingerprint: evidence chains repeat their roots and intermediates). */
export function parseCertificate(der: Uint8Array): ParsedCertificate {
  const fingerprint = sha256Fingerprint(der);
  const hit = cache.get(fingerprint);
  if (hit) return hit;
  let parsed: ParsedCertificate;
  try {
    parsed = parseUncached(der, fingerprint);
  } catch (e) {
    // Both parsers decode parts lazily: whatever they throw on hostile bytes is one refusal.
    if (e instanceof HallmarkError) throw e;
    throw pkiError("pki_cert_malformed", "a certificate in the chain cannot be parsed");
  }
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(fingerprint, parsed);
  return parsed;
}

function parseUncached(der: Uint8Array, fingerprint: string): ParsedCertificate {
  let node: X509Certificate;
  let peculiar: x509.X509Certificate;
  try {
    node = new X509Certificate(der);
    peculiar = new x509.X509Certificate(der);
  } catch {
    throw pkiError("pki_cert_malformed", "a certificate in the chain cannot be parsed");
  }
  const ext = (oid: string) => peculiar.extensions.find((e) => e.type === oid);
  const bcRaw = ext("2.5.29.19");
  const kuRaw = ext("2.5.29.15");
  let basicConstraints: ParsedCertificate["basicConstraints"];
  let keyUsage: number | undefined;
  try {
    if (bcRaw) {
      const bc = new x509.BasicConstraintsExtension(bcRaw.rawData);
      basicConstraints = { ca: bc.ca, pathLength: bc.pathLength };
    }
    if (kuRaw) keyUsage = new x509.KeyUsagesExtension(kuRaw.rawData).usages;
  } catch {
    throw pkiError("pki_cert_malformed", "a certificate extension cannot be parsed");
  }
  let publicKey: ParsedCertificate["publicKey"];
  let notBefore: Date;
  let notAfter: Date;
  try {
    publicKey = node.publicKey; // parsed lazily by Node: a corrupt key throws here
    notBefore = new Date(node.validFrom);
    notAfter = new Date(node.validTo);
  } catch {
    throw pkiError("pki_cert_malformed", "a certificate's public key or validity cannot be parsed");
  }
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) throw pkiError("pki_cert_malformed", "a certificate's validity cannot be parsed");
  const parsed: ParsedCertificate = {
    der: Buffer.from(der),
    node,
    fingerprint,
    subject: node.subject,
    issuer: node.issuer,
    notBefore,
    notAfter,
    publicKey,
    basicConstraints,
    keyUsage,
    extensions: peculiar.extensions.map((e) => ({ oid: e.type, critical: e.critical, value: Buffer.from(e.value) })),
  };
  return parsed;
}
