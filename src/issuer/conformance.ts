import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { X509Certificate } from "node:crypto";
import { HallmarkError } from "../errors.js";
import { SpiffeId, type TrustDomain } from "../spiffe/id.js";

/**
 * The MUSTs of the SPIFFE X509-SVID standard (spiffe/spiffe standards/X509-SVID.md), checked
 * with parsers independent of our certificate builder. The issuer runs this after signing and
 * refuses to hand out a certificate that fails; tests run it on everything we issue.
 */
const fail = (rule: string) => new HallmarkError("svid_nonconformant", `X509-SVID conformance: ${rule}`);

function parse(der: Uint8Array): { node: X509Certificate; peculiar: x509.X509Certificate } {
  try {
    return { node: new X509Certificate(der), peculiar: new x509.X509Certificate(der) };
  } catch {
    throw fail("the certificate cannot be parsed");
  }
}

function uriSans(c: x509.X509Certificate): string[] {
  const raw = c.getExtension("2.5.29.17");
  if (!raw) return [];
  return new x509.SubjectAlternativeNameExtension(raw.rawData).names.items.filter((n) => n.type === "url").map((n) => n.value);
}

function keyUsage(c: x509.X509Certificate): { critical: boolean; usages: number } | undefined {
  const raw = c.getExtension("2.5.29.15");
  if (!raw) return undefined;
  const ku = new x509.KeyUsagesExtension(raw.rawData);
  return { critical: ku.critical, usages: ku.usages };
}

function basicConstraints(c: x509.X509Certificate): { ca: boolean; critical: boolean } | undefined {
  const raw = c.getExtension("2.5.29.19");
  if (!raw) return undefined;
  const bc = new x509.BasicConstraintsExtension(raw.rawData);
  return { ca: bc.ca, critical: bc.critical };
}

/** Leaf X509-SVID: §2 (one URI SAN), §4.1 (cA false), §4.3 (key usage), §5 (validity within the signer's). */
export function checkX509SvidConformance(der: Uint8Array, o: { trustDomain: TrustDomain; caCertificate?: Uint8Array }): SpiffeId {
  const { node, peculiar } = parse(der);
  const uris = uriSans(peculiar);
  if (uris.length !== 1) throw fail(`an X509-SVID MUST contain exactly one URI SAN (found ${uris.length})`);
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(uris[0] ?? "");
  } catch {
    throw fail("the URI SAN MUST be a valid SPIFFE ID");
  }
  if (!id.memberOf(o.trustDomain)) throw fail(`the SPIFFE ID MUST be in trust domain ${o.trustDomain.name} and have a path`);
  const bc = basicConstraints(peculiar);
  if (!bc || bc.ca) throw fail("leaf SVIDs MUST set basicConstraints cA to false");
  const ku = keyUsage(peculiar);
  if (!ku) throw fail("leaf SVIDs MUST carry the key usage extension");
  if (!ku.critical) throw fail("the key usage extension MUST be marked critical");
  if (!(ku.usages & x509.KeyUsageFlags.digitalSignature)) throw fail("leaf SVIDs MUST set digitalSignature");
  if (ku.usages & (x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign)) {
    throw fail("leaf SVIDs MUST NOT set keyCertSign or cRLSign");
  }
  if (o.caCertificate) {
    const ca = parse(o.caCertificate).node;
    if (!node.verify(ca.publicKey)) throw fail("the SVID's signature does not verify with the signing certificate");
    if (new Date(node.validTo) > new Date(ca.validTo)) throw fail("an SVID MUST NOT outlive its signing certificate");
  }
  return id;
}

/** Signing certificates (§4.1, §4.3): cA true, keyCertSign set; a URI SAN, if any, is the bare trust domain ID. */
export function checkSigningCertConformance(der: Uint8Array, o: { trustDomain: TrustDomain }): void {
  const { peculiar } = parse(der);
  const bc = basicConstraints(peculiar);
  if (!bc?.ca) throw fail("signing certificates MUST set basicConstraints cA to true");
  const ku = keyUsage(peculiar);
  if (!ku || !(ku.usages & x509.KeyUsageFlags.keyCertSign)) throw fail("signing certificates MUST set keyCertSign");
  for (const uri of uriSans(peculiar)) {
    if (uri !== o.trustDomain.idString) throw fail("a signing certificate's SPIFFE ID MUST be the trust domain ID, without a path");
  }
}
