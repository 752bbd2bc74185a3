import type { KeyObject } from "node:crypto";
import { HallmarkError } from "../errors.js";
import type { Signer } from "../hsm/signer.js";
import { DNS_NAME, ipAddressBytes } from "../pki/subject-names.js";
import type { SpiffeId } from "../spiffe/id.js";
import { checkX509SvidConformance } from "./conformance.js";
import { ACCEPTED_KEYS, isAcceptedKey, readSpki } from "./spki.js";
import { BACKDATE_SECONDS, requireTtl } from "./validity.js";
import {
  DN,
  EKU,
  authorityKeyIdentifierExtension,
  basicConstraintsExtension,
  distinguishedName,
  extKeyUsageExtension,
  issuerFacts,
  keyIdentifier,
  keyUsageExtension,
  signCertificate,
  subjectAltNameExtension,
  subjectKeyIdentifierExtension,
} from "./x509-builder.js";
import { x509SchemeFor } from "./signature-formats.js";
import { timeOrderedSerial } from "../time-ordered-id.js";

export interface IssuedCertificate {
  der: Buffer;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
}

export type SubjectKey = { spki: Buffer } | { publicKey: KeyObject };

const MAX_DNS_NAMES = 32;
const MAX_IP_ADDRESSES = 16;

/**
 * The Subject of every leaf: a fixed O, never identity. X509-SVID §3.1 lets the Subject be
 * omitted only if the URI SAN is then critical, and some TLS stacks still mishandle empty
 * subjects; a constant DN keeps the URI SAN the one place the identity lives (SPIRE does alike).
 */
const LEAF_SUBJECT = distinguishedName([[DN.organization, "SPIFFE"]]);

/** The extensions every leaf shares, encoded once. */
const LEAF_BASIC_CONSTRAINTS = basicConstraintsExtension(false);
const LEAF_EXT_KEY_USAGE = extKeyUsageExtension([EKU.serverAuth, EKU.clientAuth]);
const LEAF_KEY_USAGE = {
  ec: keyUsageExtension(["digitalSignature"]),
  rsa: keyUsageExtension(["digitalSignature", "keyEncipherment"]),
};

/**
 * Issues a leaf X509-SVID under `ca` and checks it against every MUST of X509-SVID.md before
 * returning it (validate-after-sign): exactly one URI SAN, the SPIFFE ID (DNS SANs may follow);
 * cA false; key usage critical with digitalSignature, plus keyEncipherment for RSA keys (TLS 1.2
 * RSA key transport) and not keyAgreement for EC keys (TLS uses ephemeral ECDH, never the
 * certificate key); extKeyUsage serverAuth and clientAuth; a 128-bit CSPRNG serial; notBefore
 * backdated; notAfter never past the CA's. A CA that names its trust domain issues for it alone.
 */
export async function issueX509Svid(
  o: {
    ca: { signer: Signer; certificate: Buffer };
    spiffeId: SpiffeId;
    ttlSeconds: number;
    now: Date;
    dnsNames?: string[] | undefined;
    ipAddresses?: string[] | undefined;
  } & SubjectKey,
): Promise<IssuedCertificate> {
  requireTtl(o.ttlSeconds);
  const dnsNames = o.dnsNames ?? [];
  if (dnsNames.length > MAX_DNS_NAMES || !dnsNames.every((d) => DNS_NAME.test(d))) {
    throw new HallmarkError("invalid_request", `DNS names must be at most ${MAX_DNS_NAMES} valid host names`);
  }
  const ipAddresses = (o.ipAddresses ?? []).map(ipAddressBytes);
  if (ipAddresses.length > MAX_IP_ADDRESSES || !ipAddresses.every((ip): ip is Buffer => ip !== undefined)) {
    throw new HallmarkError("invalid_request", `IP addresses must be at most ${MAX_IP_ADDRESSES} IPv4 or IPv6 addresses`);
  }
  const spki = "publicKey" in o ? o.publicKey.export({ type: "spki", format: "der" }) : o.spki;
  const key = readSpki(spki);
  if (!isAcceptedKey(key)) throw new HallmarkError("csr_key_unsupported", `accepted keys are ${ACCEPTED_KEYS}`);
  const ca = issuerFacts(o.ca.certificate);
  if (ca.trustDomainId !== undefined && ca.trustDomainId !== o.spiffeId.trustDomain.idString) {
    throw new HallmarkError("spiffe_id_outside_trust_domain", `${o.spiffeId} is not in the CA's trust domain`);
  }
  const notBefore = new Date(o.now.getTime() - BACKDATE_SECONDS * 1000);
  const notAfter = new Date(Math.min(o.now.getTime() + o.ttlSeconds * 1000, ca.notAfter.getTime()));
  if (notAfter.getTime() <= o.now.getTime()) throw new HallmarkError("ca_not_ready", "the CA certificate has expired");
  const serial = timeOrderedSerial();
  const der = await signCertificate(
    {
      serial,
      issuer: ca.subject,
      subject: LEAF_SUBJECT,
      notBefore,
      notAfter,
      spki,
      extensions: [
        LEAF_BASIC_CONSTRAINTS,
        LEAF_KEY_USAGE[key.kind],
        LEAF_EXT_KEY_USAGE,
        subjectKeyIdentifierExtension(keyIdentifier(spki)),
        authorityKeyIdentifierExtension(ca.keyId),
        subjectAltNameExtension([o.spiffeId.toString()], dnsNames, ipAddresses),
      ],
    },
    o.ca.signer,
    x509SchemeFor(o.ca.signer.keyType),
  );
  checkX509SvidConformance(der, { trustDomain: o.spiffeId.trustDomain, caCertificate: o.ca.certificate });
  return { der, serialHex: serial.toString("hex"), notBefore, notAfter };
}
