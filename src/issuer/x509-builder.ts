import { createHash, randomBytes } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import { Certificate } from "@peculiar/asn1-x509";
import { HallmarkError } from "../errors.js";
import type { SignatureScheme, Signer } from "../hsm/signer.js";
import {
  type Der,
  OID,
  bitString,
  boolean,
  explicit,
  implicitPrimitive,
  octetString,
  oid,
  readTlv,
  sequence,
  smallInteger,
  time,
  unsignedInteger,
} from "./der.js";
import { SCHEMES, x509SignatureValue } from "./signature-formats.js";

export interface Extension {
  oid: string;
  critical: boolean;
  value: Der;
}

export interface CertificateTemplate {
  serial: Buffer;
  issuer: Der;
  subject: Der;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  extensions: Extension[];
}

/** A positive 128-bit serial from the CSPRNG (RFC 5280 allows up to 20 octets). */
export function randomSerial(): Buffer {
  const b = randomBytes(16);
  b[0] = (b[0] ?? 0) & 0x7f;
  if (b[0] === 0) b[0] = 0x01;
  return b;
}

/** Builds the TBSCertificate, has the Signer sign its DER, and returns the Certificate DER. */
export async function signCertificate(t: CertificateTemplate, signer: Signer, scheme: SignatureScheme): Promise<Buffer> {
  const algorithm = SCHEMES[scheme].algorithmIdentifier();
  const tbs = sequence(
    explicit(0, smallInteger(2)),
    unsignedInteger(t.serial),
    algorithm,
    t.issuer,
    sequence(time(t.notBefore), time(t.notAfter)),
    t.subject,
    t.spki,
    explicit(3, sequence(...t.extensions.map(encodeExtension))),
  );
  const raw = await signer.sign(tbs, scheme);
  return sequence(tbs, algorithm, bitString(x509SignatureValue(scheme, raw)));
}

function encodeExtension(e: Extension): Der {
  return e.critical ? sequence(oid(e.oid), boolean(true), octetString(e.value)) : sequence(oid(e.oid), octetString(e.value));
}

export const KEY_USAGE = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

export function keyUsage(bits: number[]): Extension {
  let mask = 0;
  for (const b of bits) mask |= 0x80 >> b;
  const highest = Math.max(...bits);
  return { oid: OID.keyUsage, critical: true, value: bitString(Buffer.from([mask]), 7 - highest) };
}

export function basicConstraints(ca: boolean, pathLen?: number): Extension {
  const body = ca ? [boolean(true), ...(pathLen !== undefined ? [smallInteger(pathLen)] : [])] : [];
  return { oid: OID.basicConstraints, critical: true, value: sequence(...body) };
}

export function extKeyUsage(oids: string[]): Extension {
  return { oid: OID.extKeyUsage, critical: false, value: sequence(...oids.map(oid)) };
}

export function subjectAltName(uris: string[], dnsNames: string[] = []): Extension {
  const names = [
    ...uris.map((u) => implicitPrimitive(6, Buffer.from(u, "ascii"))),
    ...dnsNames.map((d) => implicitPrimitive(2, Buffer.from(d, "ascii"))),
  ];
  return { oid: OID.subjectAltName, critical: false, value: sequence(...names) };
}

export function subjectKeyIdentifier(spki: Buffer): Extension {
  return { oid: OID.subjectKeyIdentifier, critical: false, value: octetString(keyIdentifier(spki)) };
}

export function authorityKeyIdentifier(issuerSpki: Buffer): Extension {
  return { oid: OID.authorityKeyIdentifier, critical: false, value: sequence(implicitPrimitive(0, keyIdentifier(issuerSpki))) };
}

/** RFC 7093 §2 method 1: the leftmost 160 bits of SHA-256 of the subjectPublicKey bits. */
export function keyIdentifier(spki: Buffer): Buffer {
  return createHash("sha256").update(subjectPublicKeyBits(spki)).digest().subarray(0, 20);
}

export interface CertificateFacts {
  subject: Buffer;
  spki: Buffer;
  notAfter: Date;
  notBefore: Date;
}

const factsCache = new WeakMap<Uint8Array, CertificateFacts>();

/** Reads what certificate building needs from an existing certificate, with an independent parser (memoised per buffer). */
export function certificateFacts(der: Uint8Array): CertificateFacts {
  const cached = factsCache.get(der);
  if (cached) return cached;
  const facts = parseFacts(der);
  factsCache.set(der, facts);
  return facts;
}

function parseFacts(der: Uint8Array): CertificateFacts {
  try {
    const cert = AsnConvert.parse(der, Certificate);
    const tbs = cert.tbsCertificate;
    return {
      subject: Buffer.from(AsnConvert.serialize(tbs.subject)),
      spki: Buffer.from(AsnConvert.serialize(tbs.subjectPublicKeyInfo)),
      notBefore: tbs.validity.notBefore.getTime(),
      notAfter: tbs.validity.notAfter.getTime(),
    };
  } catch (e) {
    throw new HallmarkError("config_invalid", "a CA certificate cannot be parsed", { cause: e });
  }
}

/** SubjectPublicKeyInfo ::= SEQUENCE { algorithm, subjectPublicKey BIT STRING }: the key bits. */
function subjectPublicKeyBits(spki: Buffer): Buffer {
  const outer = readTlv(spki, 0);
  const alg = outer && readTlv(spki, outer.start);
  const bits = alg && readTlv(spki, alg.end);
  if (!outer || outer.tag !== 0x30 || outer.end !== spki.length || !bits || bits.tag !== 0x03) {
    throw new HallmarkError("csr_malformed", "malformed public key");
  }
  return spki.subarray(bits.start + 1, bits.end);
}
