import { verify as cryptoVerify } from "node:crypto";
import { validateChainCached } from "../../pki/chain-cache.js";
import { type ParsedCertificate, parseCertificate } from "../../pki/certificate.js";
import { snpError } from "./errors.js";
import { type Product, SIGNED_LENGTH, type SnpReport, type Tcb, decodeTcb, productFromCpuid } from "./report.js";

/** AMD KDS certificate extensions (VCEK/VLEK specification). */
const OID = {
  productName: "1.3.6.1.4.1.3704.1.2",
  blSpl: "1.3.6.1.4.1.3704.1.3.1",
  teeSpl: "1.3.6.1.4.1.3704.1.3.2",
  snpSpl: "1.3.6.1.4.1.3704.1.3.3",
  ucodeSpl: "1.3.6.1.4.1.3704.1.3.8",
  fmcSpl: "1.3.6.1.4.1.3704.1.3.9",
  hwId: "1.3.6.1.4.1.3704.1.4",
} as const;

const SIGNING_KEY_NAMES = ["VCEK", "VLEK"] as const;

export interface VerifiedSnpReport {
  product: Product;
  tcb: Tcb;
  signer: "VCEK" | "VLEK";
  rootFingerprint: string;
}

/**
 * Verifies a report: its signature algorithm, the signing certificate's kind (VCEK or VLEK, as
 * the report's signer info says) and product, the chain VCEK → ASK → ARK (or VLEK → ASVK → ARK)
 * to a pinned ARK at `at`, the certificate's TCB against reported_tcb and its hardware ID against
 * chip_id, then the ECDSA P-384 signature over bytes 0x000-0x29F.
 */
export function verifySnpReport(
  report: SnpReport,
  o: { signingCert: Uint8Array; chain: readonly Uint8Array[]; anchors: readonly Uint8Array[]; at: Date; product?: Product | undefined },
): VerifiedSnpReport {
  if (report.signatureAlgo !== 1) throw snpError("snp_unsupported_signature_algorithm", `signature algorithm ${report.signatureAlgo} is not 1 (ECDSA P-384 SHA-384)`);
  const signer = SIGNING_KEY_NAMES[report.signingKey];
  if (!signer) throw snpError("snp_signer_mismatch", `the report names signing key ${report.signingKey}, neither VCEK nor VLEK`);
  const cert = parseCertificate(o.signingCert);
  const certKind = commonName(cert.subject).includes("VLEK") ? "VLEK" : commonName(cert.subject).includes("VCEK") ? "VCEK" : undefined;
  if (certKind !== signer) throw snpError("snp_signer_mismatch", `the report is signed by a ${signer}, but the certificate is ${certKind ?? "neither"}`);

  const product = reportProduct(report, cert, o.product);
  const issuerProduct = commonName(cert.issuer).replace(/^SEV-(VLEK-)?/, "");
  if (issuerProduct !== product) throw snpError("snp_product_mismatch", `the ${signer} was issued for ${issuerProduct}, the report is from ${product}`);
  const chain = validateChainCached({ leaf: o.signingCert, intermediates: o.chain, anchors: o.anchors, at: o.at });

  const tcb = decodeTcb(report.reportedTcbRaw, product);
  const certTcb = {
    bootloader: splOf(cert, OID.blSpl),
    tee: splOf(cert, OID.teeSpl),
    snp: splOf(cert, OID.snpSpl),
    microcode: splOf(cert, OID.ucodeSpl),
    ...(product === "Turin" ? { fmc: splOf(cert, OID.fmcSpl) } : {}),
  };
  for (const [k, v] of Object.entries(certTcb)) {
    if (tcb[k as keyof Tcb] !== v) throw snpError("snp_tcb_mismatch", `${k} is ${String(tcb[k as keyof Tcb])} in the report but ${String(v)} in the ${signer}`);
  }
  if (signer === "VCEK" && !report.maskChipKey) {
    const hwId = extension(cert, OID.hwId);
    const want = product === "Turin" ? report.chipId.subarray(0, 8) : report.chipId;
    if (!hwId || !hwId.equals(want)) throw snpError("snp_chip_id_mismatch", "the VCEK's hardware ID is not this report's chip ID");
  }
  if (!cryptoVerifySignature(report, cert)) throw snpError("snp_signature_invalid", `the report's signature does not verify with the ${signer}`);
  return { product, tcb, signer, rootFingerprint: chain.anchorFingerprint };
}

function reportProduct(report: SnpReport, cert: ParsedCertificate, configured: Product | undefined): Product {
  const fromCpuid = report.cpuid ? productFromCpuid(report.cpuid) : undefined;
  const name = extension(cert, OID.productName);
  // productName is an IA5String such as "Milan-B0"; the product is the part before the stepping.
  const fromCert = name && name[0] === 0x16 ? (name.subarray(2).toString("ascii").split("-")[0] as Product) : undefined;
  const product = fromCpuid ?? fromCert ?? configured;
  if (!product || !["Milan", "Genoa", "Turin"].includes(product)) throw snpError("snp_product_mismatch", "the report's product cannot be determined");
  if (fromCert && fromCert !== product) throw snpError("snp_product_mismatch", `the certificate is for ${fromCert}, the report is from ${product}`);
  return product;
}

/** r and s are 72-byte little-endian fields; P-384 uses the low 48 bytes, the rest must be zero. */
function cryptoVerifySignature(report: SnpReport, cert: ParsedCertificate): boolean {
  const field = (b: Buffer) => (b.subarray(48).every((x) => x === 0) ? Buffer.from(b.subarray(0, 48)).reverse() : undefined);
  const r = field(report.signatureR);
  const s = field(report.signatureS);
  if (!r || !s) return false;
  try {
    return cryptoVerify("sha384", report.raw.subarray(0, SIGNED_LENGTH), { key: cert.publicKey, dsaEncoding: "ieee-p1363" }, Buffer.concat([r, s]));
  } catch {
    return false;
  }
}

function extension(cert: ParsedCertificate, oid: string): Buffer | undefined {
  return cert.extensions.find((e) => e.oid === oid)?.value;
}

/** An SPL extension: a DER INTEGER of one or two bytes. */
function splOf(cert: ParsedCertificate, oid: string): number {
  const v = extension(cert, oid);
  if (!v || v[0] !== 0x02 || v[1] === undefined || v[1] < 1 || v[1] > 2 || v.length !== 2 + v[1]) {
    throw snpError("snp_tcb_mismatch", `the signing certificate has no valid TCB extension ${oid}`);
  }
  return v.readUIntBE(2, v[1]);
}

function commonName(dn: string): string {
  return /(?:^|\n)CN=([^\n]*)/.exec(dn)?.[1] ?? "";
}
