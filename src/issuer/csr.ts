import { type KeyObject, constants, verify } from "node:crypto";
import { HallmarkError } from "../errors.js";
import { KEY_USAGE_BIT, TAG, children, decodeBasicConstraints, decodeGeneralNames, decodeKeyUsage, oidString, readExtensions, whole } from "./der-reader.js";
import { ACCEPTED_KEYS, isAcceptedKey, publicKeyOf, readSpki } from "./spki.js";

export interface ParsedCsr {
  /** The SubjectPublicKeyInfo DER, exactly as in the request. */
  spki: Buffer;
  publicKey: KeyObject;
  keyType: "ec-p256" | "ec-p384" | "rsa";
  uriSans: string[];
  dnsSans: string[];
  /** Whether the CSR asked for a CA certificate (only ever true with `allowCaRequest`). */
  requestsCa: boolean;
}

export interface ParseCsrOptions {
  /** Largest DER accepted (the PEM text may be 4/3 of this plus line breaks). */
  maxBytes?: number;
  /** Report a CA request in `requestsCa` instead of refusing it with csr_requests_ca. */
  allowCaRequest?: boolean;
}

export const MAX_CSR_BYTES = 8 * 1024;

/**
 * RSASSA-PSS parameters (RFC 4055) as OpenSSL and Go encode them: hash H, MGF1 with H, salt the
 * length of H, default trailer. Other parameter sets are refused rather than interpreted.
 */
const pssAlgorithm = (hashAlgorithm: string, saltLength: number): string =>
  `304106092a864886f70d01010a3034a00f${hashAlgorithm}a11c301a06092a864886f70d010108${hashAlgorithm}a2030201${saltLength.toString(16).padStart(2, "0")}`;
/** AlgorithmIdentifier { id-sha256 | id-sha384 | id-sha512, NULL }. */
const SHA2 = { sha256: "300d06096086480165030402010500", sha384: "300d06096086480165030402020500", sha512: "300d06096086480165030402030500" };

/** CSR signature algorithms accepted, by the DER of their AlgorithmIdentifier. */
const SIGNATURE_ALGORITHMS = new Map<string, { hash: string; rsa: boolean; pssSaltLength?: number }>([
  ["300a06082a8648ce3d040302", { hash: "sha256", rsa: false }],
  ["300a06082a8648ce3d040303", { hash: "sha384", rsa: false }],
  ["300a06082a8648ce3d040304", { hash: "sha512", rsa: false }],
  ["300d06092a864886f70d01010b0500", { hash: "sha256", rsa: true }],
  ["300d06092a864886f70d01010c0500", { hash: "sha384", rsa: true }],
  ["300d06092a864886f70d01010d0500", { hash: "sha512", rsa: true }],
  [pssAlgorithm(SHA2.sha256, 32), { hash: "sha256", rsa: true, pssSaltLength: 32 }],
  [pssAlgorithm(SHA2.sha384, 48), { hash: "sha384", rsa: true, pssSaltLength: 48 }],
  [pssAlgorithm(SHA2.sha512, 64), { hash: "sha512", rsa: true, pssSaltLength: 64 }],
]);

const EXTENSION_REQUEST = "1.2.840.113549.1.9.14";
const OID = { basicConstraints: "2.5.29.19", keyUsage: "2.5.29.15", subjectAltName: "2.5.29.17" } as const;

const PEM_CSR = /^\s*-----BEGIN (NEW )?CERTIFICATE REQUEST-----\r?\n([A-Za-z0-9+/=\s]+)-----END \1CERTIFICATE REQUEST-----\s*$/;

const malformed = (why: string) => new HallmarkError("csr_malformed", `the CSR cannot be parsed: ${why}`);

/**
 * Parses a PKCS#10 CSR (RFC 2986; PEM or DER) from an untrusted caller and checks what issuance
 * relies on: proof of possession (its signature, verified over the exact bytes received), an
 * accepted key (EC P-256/P-384, RSA 2048-4096), and that it does not ask to be a CA. Read by a
 * DER walk (a few microseconds; a schema parse and OpenSSL's DER key decoder cost a hundred
 * times more on a path every workload takes).
 */
export function parseCsr(input: string | Uint8Array, opts: ParseCsrOptions = {}): ParsedCsr {
  const der = toDer(input, opts.maxBytes ?? MAX_CSR_BYTES);
  const outer = whole(der, TAG.sequence);
  const [info, algorithm, signature, ...rest] = (outer && children(der, outer)) ?? [];
  if (info?.tag !== TAG.sequence || algorithm?.tag !== TAG.sequence || signature?.tag !== TAG.bitString || rest.length) {
    throw malformed("not a DER CertificationRequest, or trailing bytes");
  }
  const [version, subject, spkiTlv, attributes, ...more] = children(der, info) ?? [];
  if (version?.tag !== TAG.integer || version.end - version.start !== 1 || der[version.start] !== 0) throw malformed("unsupported version");
  if (subject?.tag !== TAG.sequence || spkiTlv?.tag !== TAG.sequence || attributes?.tag !== 0xa0 || more.length) throw malformed("unexpected structure");

  const spki = Buffer.from(der.subarray(spkiTlv.headerStart, spkiTlv.end));
  const keyInfo = readSpki(spki);
  if (!keyInfo) throw malformed("malformed public key");
  if (!isAcceptedKey(keyInfo)) throw new HallmarkError("csr_key_unsupported", `accepted keys are ${ACCEPTED_KEYS}`);
  let publicKey: KeyObject;
  try {
    publicKey = publicKeyOf(keyInfo);
  } catch {
    throw new HallmarkError("csr_key_unsupported", "the CSR's public key is not a valid key");
  }

  const scheme = SIGNATURE_ALGORITHMS.get(Buffer.from(der.subarray(algorithm.headerStart, algorithm.end)).toString("hex"));
  if (!scheme) throw new HallmarkError("csr_signature_invalid", "the CSR's signature algorithm is not accepted");
  if (signature.end - signature.start < 2 || der[signature.start] !== 0) throw malformed("malformed signature");
  const ok = (() => {
    try {
      const key = !scheme.rsa
        ? { key: publicKey, dsaEncoding: "der" as const }
        : scheme.pssSaltLength !== undefined
          ? { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: scheme.pssSaltLength }
          : { key: publicKey, padding: constants.RSA_PKCS1_PADDING };
      return scheme.rsa === (keyInfo.kind === "rsa") && verify(scheme.hash, der.subarray(info.headerStart, info.end), key, der.subarray(signature.start + 1, signature.end));
    } catch {
      return false;
    }
  })();
  if (!ok) throw new HallmarkError("csr_signature_invalid", "the CSR's signature does not verify (no proof of possession)");

  const requested = requestedExtensions(der, children(der, attributes));
  const bc = requested.get(OID.basicConstraints);
  const ku = requested.get(OID.keyUsage);
  const san = requested.get(OID.subjectAltName);
  const cA = bc && decodeBasicConstraints(bc.value);
  const usage = ku && decodeKeyUsage(ku.value);
  const names = san && decodeGeneralNames(san.value);
  if ((bc && !cA) || (ku && usage === undefined) || (san && !names)) throw malformed("invalid extension request");
  const requestsCa = Boolean(cA?.cA || (usage ?? 0) & (KEY_USAGE_BIT.keyCertSign | KEY_USAGE_BIT.cRLSign));
  if (requestsCa && !opts.allowCaRequest) throw new HallmarkError("csr_requests_ca", "the CSR asks for a CA certificate");
  const keyType = keyInfo.kind === "rsa" ? "rsa" : keyInfo.curve === "P-256" ? "ec-p256" : "ec-p384";
  return { spki, publicKey, keyType, uriSans: names?.uris ?? [], dnsSans: names?.dnsNames ?? [], requestsCa };
}

/** Attributes ::= SET OF SEQUENCE { type OID, values SET OF ANY }: the Extensions of an extensionRequest (RFC 2985 §5.4.2). */
function requestedExtensions(der: Uint8Array, attributes: ReturnType<typeof children>) {
  if (!attributes) throw malformed("invalid attributes");
  for (const attribute of attributes) {
    const [type, values, ...rest] = (attribute.tag === TAG.sequence && children(der, attribute)) || [];
    if (!type || values?.tag !== TAG.set || rest.length) throw malformed("invalid attribute");
    if (oidString(der, type) !== EXTENSION_REQUEST) continue;
    const [extensions, ...others] = children(der, values) ?? [];
    const map = extensions && !others.length ? readExtensions(der, extensions) : undefined;
    if (!map || map === "duplicate") throw malformed("invalid extension request");
    return map;
  }
  return new Map<string, { critical: boolean; value: Uint8Array }>();
}

function toDer(input: string | Uint8Array, maxBytes: number): Buffer {
  if (typeof input !== "string") {
    if (input.length > maxBytes) throw malformed(`larger than ${maxBytes} bytes`);
    return Buffer.from(input);
  }
  if (input.length > maxBytes * 2) throw malformed(`larger than ${maxBytes} bytes`);
  // Exactly one block and nothing around it but whitespace; canonical base64 only.
  const m = PEM_CSR.exec(input);
  const body = m?.[2]?.replace(/\s+/g, "") ?? "";
  const der = Buffer.from(body, "base64");
  if (!m || der.length === 0 || der.toString("base64") !== body) throw malformed("expected exactly one PEM 'CERTIFICATE REQUEST' block");
  if (der.length > maxBytes) throw malformed(`larger than ${maxBytes} bytes`);
  return der;
}
