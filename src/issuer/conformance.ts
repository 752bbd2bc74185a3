import { type KeyObject, X509Certificate, constants, createPublicKey, verify } from "node:crypto";
import { HallmarkError } from "../errors.js";
import { SpiffeId, type TrustDomain } from "../spiffe/id.js";
import type { Tlv } from "./der.js";
import {
  KEY_USAGE_BIT,
  type RawExtension,
  TAG,
  children,
  decodeBasicConstraints,
  decodeExtKeyUsage,
  decodeGeneralNames,
  decodeKeyUsage,
  readExtensions,
  whole,
} from "./der-reader.js";

/**
 * The MUSTs of spiffe/spiffe standards/X509-SVID.md, checked on the finished DER by a parser
 * that shares nothing with our builder: a DER walk of the certificate and of the fields SPIFFE
 * constrains, and node:crypto for the signature. The issuer runs this after signing every SVID
 * and never hands out a certificate that fails it. (OpenSSL's own certificate parse, node's
 * X509Certificate, costs about 100 µs for its eager key decode, half of a whole issuance: it
 * checks signing certificates, which are rare, and the tests check every kind with it.)
 *
 * Each failure is `svid_nonconformant`; `internal` names the rule (stable, for logs and tests).
 */
export type ConformanceRule =
  | "unparseable"
  | "version"
  | "serial"
  | "signature_algorithm"
  | "uri_san_count"
  | "spiffe_id"
  | "san_critical_without_subject"
  | "basic_constraints"
  | "key_usage_missing"
  | "key_usage_critical"
  | "key_usage_digital_signature"
  | "key_usage_ca_bits"
  | "key_usage_key_cert_sign"
  | "ext_key_usage"
  | "duplicate_extension"
  | "issuer_name"
  | "authority_key_id"
  | "signature"
  | "validity";

const fail = (rule: ConformanceRule, why: string): HallmarkError =>
  new HallmarkError("svid_nonconformant", `X509-SVID conformance: ${why}`, { internal: rule });

const OID = {
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

interface Parsed {
  der: Uint8Array;
  /** The signed bytes, the signatureAlgorithm DER and the signature. */
  tbs: Uint8Array;
  algorithm: Uint8Array;
  signature: Uint8Array;
  issuer: Uint8Array;
  subject: Uint8Array;
  spki: Uint8Array;
  notBefore: number;
  notAfter: number;
  subjectEmpty: boolean;
  extensions: Map<string, RawExtension>;
}

/** Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }, RFC 5280 §4.1. */
function parse(der: Uint8Array): Parsed {
  const cert = whole(der, TAG.sequence);
  const [tbs, outerAlg, signature, ...rest] = (cert && children(der, cert)) ?? [];
  const fields = tbs?.tag === TAG.sequence ? children(der, tbs) : undefined;
  if (!tbs || outerAlg?.tag !== TAG.sequence || signature?.tag !== TAG.bitString || der[signature.start] !== 0 || rest.length || !fields) {
    throw fail("unparseable", "the certificate cannot be parsed");
  }
  const [version, serial, innerAlg, issuer, validity, subject, spki, ...optional] = fields;
  if (version?.tag !== 0xa0 || !sameBytes(der, version, Uint8Array.of(0x02, 0x01, 0x02))) {
    throw fail("version", "extensions require an X.509 v3 certificate");
  }
  if (serial?.tag !== TAG.integer || !validSerial(der.subarray(serial.start, serial.end))) {
    throw fail("serial", "the serial number MUST be a positive integer of at most 20 octets");
  }
  if (!innerAlg || !sameBytes(der, innerAlg, der.subarray(outerAlg.headerStart, outerAlg.end))) {
    throw fail("signature_algorithm", "the signature algorithm in the TBSCertificate MUST match the outer one");
  }
  if (issuer?.tag !== TAG.sequence || subject?.tag !== TAG.sequence || spki?.tag !== TAG.sequence) throw fail("unparseable", "the certificate structure is malformed");
  const times = validity?.tag === TAG.sequence ? children(der, validity) : undefined;
  const notBefore = times?.[0] && readTime(der, times[0]);
  const notAfter = times?.[1] && readTime(der, times[1]);
  if (times?.length !== 2 || notBefore === undefined || notAfter === undefined) throw fail("unparseable", "the validity is malformed");
  const extsWrapper = optional.find((t) => t.tag === 0xa3);
  const extsSeq = extsWrapper && children(der, extsWrapper);
  const extensions = extsSeq?.length === 1 && extsSeq[0] ? readExtensions(der, extsSeq[0]) : extsWrapper ? undefined : new Map<string, RawExtension>();
  if (extensions === "duplicate") throw fail("duplicate_extension", "an extension appears more than once (RFC 5280 §4.2)");
  if (!extensions) throw fail("unparseable", "the extensions are malformed");
  const bytes = (t: Tlv) => der.subarray(t.headerStart, t.end);
  return {
    der,
    tbs: bytes(tbs),
    algorithm: bytes(outerAlg),
    signature: der.subarray(signature.start + 1, signature.end),
    issuer: bytes(issuer),
    subject: bytes(subject),
    spki: bytes(spki),
    notBefore,
    notAfter,
    subjectEmpty: subject.end === subject.start,
    extensions,
  };
}

function sameBytes(der: Uint8Array, t: Tlv, expected: Uint8Array): boolean {
  const actual = t.tag === 0xa0 ? der.subarray(t.start, t.end) : der.subarray(t.headerStart, t.end);
  return Buffer.from(actual).equals(Buffer.from(expected));
}

function validSerial(b: Uint8Array): boolean {
  if (b.length === 0 || (b[0] ?? 0) & 0x80 || b.length > 21) return false;
  const magnitude = b[0] === 0 && b.length > 1 ? b.subarray(1) : b;
  return magnitude.length <= 20 && magnitude.some((x) => x !== 0);
}

/** UTCTime YYMMDDHHMMSSZ / GeneralizedTime YYYYMMDDHHMMSSZ (RFC 5280 §4.1.2.5) → epoch ms. */
function readTime(der: Uint8Array, t: Tlv): number | undefined {
  const s = Buffer.from(der.subarray(t.start, t.end)).toString("latin1");
  const m =
    t.tag === TAG.utcTime ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : t.tag === TAG.generalizedTime ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : null;
  if (!m) return undefined;
  const [, y = "", mo = "", d = "", h = "", mi = "", se = ""] = m;
  const year = t.tag === TAG.utcTime ? (Number(y) < 50 ? 2000 : 1900) + Number(y) : Number(y);
  return Date.UTC(year, Number(mo) - 1, Number(d), Number(h), Number(mi), Number(se));
}

function decoded<T>(e: RawExtension | undefined, decode: (v: Uint8Array) => T | undefined, what: string): T | undefined {
  if (!e) return undefined;
  const v = decode(e.value);
  if (v === undefined) throw fail("unparseable", `the ${what} extension is malformed`);
  return v;
}

function uriSans(p: Parsed): { uris: string[]; critical: boolean } {
  const e = p.extensions.get(OID.subjectAltName);
  return { uris: decoded(e, decodeGeneralNames, "subject alternative name")?.uris ?? [], critical: e?.critical ?? false };
}

function keyUsage(p: Parsed): number {
  const e = p.extensions.get(OID.keyUsage);
  const flags = decoded(e, decodeKeyUsage, "key usage");
  if (!e || flags === undefined) throw fail("key_usage_missing", "the key usage extension MUST be set on all SVIDs (§4.3)");
  if (!e.critical) throw fail("key_usage_critical", "the key usage extension MUST be marked critical (§4.3)");
  return flags;
}

/**
 * A leaf X509-SVID: §2 exactly one URI SAN; §3.1 a SPIFFE ID with a path, in `trustDomain`, and a
 * critical SAN if the Subject is empty; §4.1 cA false; §4.3 critical key usage with
 * digitalSignature and neither keyCertSign nor cRLSign; §4.4 serverAuth and clientAuth when EKU
 * is present. With `caCertificate`: signed by it, named by it, and not outliving it. Returns the
 * SPIFFE ID.
 */
export function checkX509SvidConformance(der: Uint8Array, o: { trustDomain: TrustDomain; caCertificate?: Uint8Array }): SpiffeId {
  const p = parse(der);
  const san = uriSans(p);
  if (san.uris.length !== 1) throw fail("uri_san_count", `an X509-SVID MUST contain exactly one URI SAN (found ${san.uris.length})`);
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(san.uris[0] ?? "");
  } catch {
    throw fail("spiffe_id", "the URI SAN MUST be a valid SPIFFE ID");
  }
  if (!id.memberOf(o.trustDomain)) throw fail("spiffe_id", `the SPIFFE ID MUST be in trust domain ${o.trustDomain.name} and have a path`);
  if (p.subjectEmpty && !san.critical) throw fail("san_critical_without_subject", "with an empty Subject the SAN extension MUST be critical (§3.1)");
  const bc = decoded(p.extensions.get(OID.basicConstraints), decodeBasicConstraints, "basic constraints");
  if (!bc || bc.cA) throw fail("basic_constraints", "leaf SVIDs MUST set basicConstraints cA to false (§4.1)");
  const ku = keyUsage(p);
  if (!(ku & KEY_USAGE_BIT.digitalSignature)) throw fail("key_usage_digital_signature", "leaf SVIDs MUST set digitalSignature (§4.3)");
  if (ku & (KEY_USAGE_BIT.keyCertSign | KEY_USAGE_BIT.cRLSign)) throw fail("key_usage_ca_bits", "leaf SVIDs MUST NOT set keyCertSign or cRLSign (§4.3)");
  const eku = decoded(p.extensions.get(OID.extKeyUsage), decodeExtKeyUsage, "extended key usage");
  if (eku && !(eku.includes(OID.serverAuth) && eku.includes(OID.clientAuth))) {
    throw fail("ext_key_usage", "when present, extended key usage MUST include serverAuth and clientAuth (§4.4)");
  }
  if (p.notAfter <= p.notBefore) throw fail("validity", "notAfter must follow notBefore");
  if (o.caCertificate) checkIssuedBy(p, o.caCertificate);
  return id;
}

interface Issuer {
  cert: Parsed;
  publicKey: KeyObject;
  keyId: Uint8Array | undefined;
}

/** The issuing certificate is the same on every issuance: parse it and decode its key once per buffer. */
const issuers = new WeakMap<Uint8Array, Issuer>();

function issuer(caDer: Uint8Array): Issuer {
  let ca = issuers.get(caDer);
  if (!ca) {
    const cert = parse(caDer);
    if (!decoded(cert.extensions.get(OID.basicConstraints), decodeBasicConstraints, "basic constraints")?.cA) {
      throw fail("basic_constraints", "the signing certificate is not a CA certificate");
    }
    let publicKey: KeyObject;
    try {
      publicKey = createPublicKey({ key: Buffer.from(cert.spki), format: "der", type: "spki" });
    } catch {
      throw fail("unparseable", "the signing certificate's key cannot be read");
    }
    const ski = cert.extensions.get(OID.subjectKeyIdentifier);
    const keyId = ski && whole(ski.value, TAG.octetString);
    issuers.set(caDer, (ca = { cert, publicKey, keyId: keyId && ski.value.subarray(keyId.start, keyId.end) }));
  }
  return ca;
}

/** RFC 5280 §6.1.3: signed by the issuer's key, naming the issuer's subject; here also: AKI matching its SKI, and not outliving it. */
function checkIssuedBy(p: Parsed, caDer: Uint8Array): void {
  const ca = issuer(caDer);
  if (!Buffer.from(p.issuer).equals(Buffer.from(ca.cert.subject))) throw fail("issuer_name", "the issuer name does not match the signing certificate's subject");
  const aki = p.extensions.get(OID.authorityKeyIdentifier);
  const akiId = aki && authorityKeyId(aki.value);
  if (aki && akiId === undefined) throw fail("unparseable", "the authority key identifier extension is malformed");
  if (akiId && ca.keyId && !Buffer.from(akiId).equals(Buffer.from(ca.keyId))) {
    throw fail("authority_key_id", "the authority key identifier does not match the signing certificate's subject key identifier");
  }
  if (!signatureVerifies(p, ca.publicKey)) throw fail("signature", "the signature does not verify with the signing certificate");
  if (p.notAfter > ca.cert.notAfter) throw fail("validity", "an SVID MUST NOT outlive its signing certificate");
}

/** AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING OPTIONAL, … } → the key id, null if absent. */
function authorityKeyId(v: Uint8Array): Uint8Array | null | undefined {
  const seq = whole(v, TAG.sequence);
  const parts = seq && children(v, seq);
  if (!parts) return undefined;
  const id = parts.find((t) => t.tag === 0x80);
  return id ? v.subarray(id.start, id.end) : null;
}

/** The signature algorithms an SVID may carry, by the DER of their AlgorithmIdentifier (RFC 5758 §3.2, RFC 4055 §5). */
const SIGNATURE_ALGORITHMS = new Map<string, { hash: "sha256" | "sha384"; rsa: boolean }>([
  ["300a06082a8648ce3d040302", { hash: "sha256", rsa: false }],
  ["300a06082a8648ce3d040303", { hash: "sha384", rsa: false }],
  ["300d06092a864886f70d01010b0500", { hash: "sha256", rsa: true }],
  ["300d06092a864886f70d01010c0500", { hash: "sha384", rsa: true }],
]);
const RSASSA_PSS_OID = "2a864886f70d01010a";

function signatureVerifies(p: Parsed, key: KeyObject): boolean {
  const hex = Buffer.from(p.algorithm).toString("hex");
  const known = SIGNATURE_ALGORITHMS.get(hex);
  try {
    if (known) {
      const options = known.rsa ? { key, padding: constants.RSA_PKCS1_PADDING } : { key, dsaEncoding: "der" as const };
      return verify(known.hash, p.tbs, options, p.signature);
    }
    // RSASSA-PSS carries its parameters: let OpenSSL read them (rare: only when a CA signs with PSS).
    if (hex.includes(RSASSA_PSS_OID)) return new X509Certificate(p.der).verify(key);
    return false;
  } catch {
    return false;
  }
}

/**
 * A signing certificate (§3.2, §4.1, §4.3): cA true, critical key usage with keyCertSign; a URI
 * SAN, if present, is a SPIFFE ID without a path (we also require it to be our trust domain).
 */
export function checkSigningCertConformance(der: Uint8Array, o: { trustDomain: TrustDomain; issuerCertificate?: Uint8Array }): void {
  const p = parse(der);
  try {
    new X509Certificate(der);
  } catch {
    throw fail("unparseable", "OpenSSL cannot parse the certificate");
  }
  const bc = decoded(p.extensions.get(OID.basicConstraints), decodeBasicConstraints, "basic constraints");
  if (!bc?.cA) throw fail("basic_constraints", "signing certificates MUST set basicConstraints cA to true (§4.1)");
  const ku = keyUsage(p);
  if (!(ku & KEY_USAGE_BIT.keyCertSign)) throw fail("key_usage_key_cert_sign", "signing certificates MUST set keyCertSign (§4.3)");
  for (const uri of uriSans(p).uris) {
    if (uri !== o.trustDomain.idString) throw fail("spiffe_id", "a signing certificate's SPIFFE ID MUST have no path (§3.2) and be this trust domain's");
  }
  if (p.notAfter <= p.notBefore) throw fail("validity", "notAfter must follow notBefore");
  if (o.issuerCertificate) checkIssuedBy(p, o.issuerCertificate);
}
