import { HallmarkError } from "../errors.js";
import type { Signer } from "../hsm/signer.js";
import type { TrustDomain } from "../spiffe/id.js";
import { BACKDATE_SECONDS, requireTtl } from "./validity.js";
import {
  DN,
  authorityKeyIdentifierExtension,
  basicConstraintsExtension,
  distinguishedName,
  issuerFacts,
  keyIdentifier,
  keyUsageExtension,
  signCertificate,
  subjectAltNameExtension,
  subjectKeyIdentifierExtension,
} from "./x509-builder.js";
import { x509SchemeFor } from "./signature-formats.js";
import { timeOrderedSerial } from "../time-ordered-id.js";

export interface CaSubject {
  organization?: string;
  commonName?: string;
}

const spkiOf = (signer: Signer): Buffer => signer.publicKey.export({ type: "spki", format: "der" });

/**
 * O = the trust domain (as in the example of SPIFFE_Trust_Domain_and_Bundle.md, appendix A) and a
 * CN naming the key, so that a rotated CA never shares its subject with its predecessor.
 */
function caName(td: TrustDomain, keyId: Buffer, subject: CaSubject = {}) {
  return distinguishedName([
    [DN.organization, subject.organization ?? td.name],
    [DN.commonName, subject.commonName ?? `Hallmark CA ${keyId.subarray(0, 4).toString("hex")}`],
  ]);
}

/**
 * The extensions of a SPIFFE signing certificate (X509-SVID §3.2, §4.1, §4.3): cA true and
 * keyCertSign, both critical; cRLSign (allowed) and digitalSignature as SPIRE sets them; the
 * trust domain's own SPIFFE ID as URI SAN, which a signing certificate SHOULD carry (no path).
 */
function signingExtensions(td: TrustDomain, keyId: Buffer) {
  return [
    basicConstraintsExtension(true),
    keyUsageExtension(["keyCertSign", "cRLSign", "digitalSignature"]),
    subjectKeyIdentifierExtension(keyId),
    subjectAltNameExtension([td.idString]),
  ];
}

/** A self-signed root CA for the trust domain, its key in `signer`. Returns the certificate DER. */
export async function createRootCa(o: { signer: Signer; trustDomain: TrustDomain; ttlSeconds: number; now: Date; subject?: CaSubject }): Promise<Buffer> {
  requireTtl(o.ttlSeconds);
  const spki = spkiOf(o.signer);
  const keyId = keyIdentifier(spki);
  const name = caName(o.trustDomain, keyId, o.subject);
  return signCertificate(
    {
      serial: timeOrderedSerial(),
      issuer: name,
      subject: name,
      notBefore: new Date(o.now.getTime() - BACKDATE_SECONDS * 1000),
      notAfter: new Date(o.now.getTime() + o.ttlSeconds * 1000),
      spki,
      extensions: signingExtensions(o.trustDomain, keyId),
    },
    o.signer,
    x509SchemeFor(o.signer.keyType),
  );
}

/**
 * An intermediate CA for the trust domain, its key in `signer`, signed by an upstream CA (whose
 * key is in the HSM or a file): AKI is the upstream's SKI, notAfter never past the upstream's.
 */
export async function createIntermediateCa(o: {
  signer: Signer;
  upstream: { signer: Signer; certificate: Buffer };
  trustDomain: TrustDomain;
  ttlSeconds: number;
  now: Date;
  subject?: CaSubject;
}): Promise<Buffer> {
  requireTtl(o.ttlSeconds);
  const spki = spkiOf(o.signer);
  const keyId = keyIdentifier(spki);
  const up = issuerFacts(o.upstream.certificate);
  if (!up.spki.equals(spkiOf(o.upstream.signer))) {
    throw new HallmarkError("config_invalid", "the upstream CA key does not match the upstream CA certificate");
  }
  const notAfter = Math.min(o.now.getTime() + o.ttlSeconds * 1000, up.notAfter.getTime());
  if (notAfter <= o.now.getTime()) throw new HallmarkError("config_invalid", "the upstream CA certificate has expired");
  return signCertificate(
    {
      serial: timeOrderedSerial(),
      issuer: up.subject,
      subject: caName(o.trustDomain, keyId, o.subject),
      notBefore: new Date(o.now.getTime() - BACKDATE_SECONDS * 1000),
      notAfter: new Date(notAfter),
      spki,
      extensions: [...signingExtensions(o.trustDomain, keyId), authorityKeyIdentifierExtension(up.keyId)],
    },
    o.upstream.signer,
    x509SchemeFor(o.upstream.signer.keyType),
  );
}
