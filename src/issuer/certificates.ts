import type { Signer } from "../hsm/signer.js";
import type { SpiffeId, TrustDomain } from "../spiffe/id.js";
import { OID, name } from "./der.js";
import {
  KEY_USAGE,
  authorityKeyIdentifier,
  basicConstraints,
  certificateFacts,
  extKeyUsage,
  keyUsage,
  randomSerial,
  signCertificate,
  subjectAltName,
  subjectKeyIdentifier,
} from "./x509-builder.js";
import { x509SchemeFor } from "./signature-formats.js";

/** SVIDs are backdated so that a relying party whose clock lags a little still accepts them. */
export const BACKDATE_SECONDS = 10;

const spkiOf = (signer: Signer): Buffer => signer.publicKey.export({ type: "spki", format: "der" });

function caSubject(td: TrustDomain, keyId: string) {
  return name([
    [OID.organization, "Hallmark"],
    [OID.commonName, `${td.name} CA ${keyId}`],
  ]);
}

/**
 * A self-signed root for the trust domain. Per X509-SVID §4.1 a signing certificate has
 * cA=true and keyCertSign; cRLSign too. It carries the trust domain's SPIFFE ID as its URI SAN
 * (allowed for signing certificates, and it lets clients learn the trust domain from the bundle).
 */
export async function createRootCa(o: { signer: Signer; trustDomain: TrustDomain; keyId: string; ttlSeconds: number; now: Date }): Promise<Buffer> {
  const spki = spkiOf(o.signer);
  const subject = caSubject(o.trustDomain, o.keyId);
  return signCertificate(
    {
      serial: randomSerial(),
      issuer: subject,
      subject,
      notBefore: new Date(o.now.getTime() - BACKDATE_SECONDS * 1000),
      notAfter: new Date(o.now.getTime() + o.ttlSeconds * 1000),
      spki,
      extensions: [
        basicConstraints(true),
        keyUsage([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign, KEY_USAGE.digitalSignature]),
        subjectKeyIdentifier(spki),
        subjectAltName([o.trustDomain.idString]),
      ],
    },
    o.signer,
    x509SchemeFor(o.signer.keyType),
  );
}

/** An intermediate CA signed by an upstream CA (its key in the HSM or on disk); notAfter never past the upstream's. */
export async function createIntermediateCa(o: {
  signer: Signer;
  upstream: { signer: Signer; certificate: Buffer };
  trustDomain: TrustDomain;
  keyId: string;
  ttlSeconds: number;
  now: Date;
}): Promise<Buffer> {
  const spki = spkiOf(o.signer);
  const up = certificateFacts(o.upstream.certificate);
  return signCertificate(
    {
      serial: randomSerial(),
      issuer: up.subject,
      subject: caSubject(o.trustDomain, o.keyId),
      notBefore: new Date(o.now.getTime() - BACKDATE_SECONDS * 1000),
      notAfter: new Date(Math.min(o.now.getTime() + o.ttlSeconds * 1000, up.notAfter.getTime())),
      spki,
      extensions: [
        basicConstraints(true),
        keyUsage([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign, KEY_USAGE.digitalSignature]),
        subjectKeyIdentifier(spki),
        authorityKeyIdentifier(up.spki),
        subjectAltName([o.trustDomain.idString]),
      ],
    },
    o.upstream.signer,
    x509SchemeFor(o.upstream.signer.keyType),
  );
}

export interface IssuedCertificate {
  der: Buffer;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * A leaf X509-SVID (X509-SVID §4, §5): exactly one URI SAN (the SPIFFE ID; DNS SANs may follow),
 * cA=false, keyUsage critical with digitalSignature (and keyEncipherment for RSA keys, for
 * RSA key exchange in TLS 1.2), never keyCertSign or cRLSign, extKeyUsage serverAuth and
 * clientAuth, a 128-bit CSPRNG serial, notAfter never past the CA's own.
 */
export async function issueLeafSvid(o: {
  ca: { signer: Signer; certificate: Buffer };
  spki: Buffer;
  rsaKey: boolean;
  spiffeId: SpiffeId;
  dnsNames?: string[];
  ttlSeconds: number;
  now: Date;
}): Promise<IssuedCertificate> {
  const ca = certificateFacts(o.ca.certificate);
  const serial = randomSerial();
  const notBefore = new Date(o.now.getTime() - BACKDATE_SECONDS * 1000);
  const notAfter = new Date(Math.min(o.now.getTime() + o.ttlSeconds * 1000, ca.notAfter.getTime()));
  const usage = o.rsaKey ? [KEY_USAGE.digitalSignature, KEY_USAGE.keyEncipherment] : [KEY_USAGE.digitalSignature];
  const der = await signCertificate(
    {
      serial,
      issuer: ca.subject,
      subject: name([[OID.organization, "Hallmark"]]),
      notBefore,
      notAfter,
      spki: o.spki,
      extensions: [
        basicConstraints(false),
        keyUsage(usage),
        extKeyUsage([OID.serverAuth, OID.clientAuth]),
        subjectKeyIdentifier(o.spki),
        authorityKeyIdentifier(ca.spki),
        subjectAltName([o.spiffeId.toString()], o.dnsNames ?? []),
      ],
    },
    o.ca.signer,
    x509SchemeFor(o.ca.signer.keyType),
  );
  return { der, serialHex: serial.toString("hex"), notBefore, notAfter };
}
