import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export type Curve = "P-256" | "P-384";

export interface TestCa {
  cert: x509.X509Certificate;
  der: Buffer;
  keys: webcrypto.CryptoKeyPair;
  curve: Curve;
}

const hashFor = (c: Curve) => (c === "P-384" ? "SHA-384" : "SHA-256");

export async function ecKeys(curve: Curve): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: curve }, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
}

/** A certificate for tests: a root when `issuer` is absent; CA or leaf as asked; extra extensions allowed. */
export async function testCert(o: {
  name: string;
  curve?: Curve;
  issuer?: TestCa;
  ca?: boolean;
  pathLength?: number;
  notBefore?: Date;
  notAfter?: Date;
  keys?: webcrypto.CryptoKeyPair;
  extensions?: x509.Extension[];
  keyUsage?: number;
}): Promise<TestCa> {
  const curve = o.curve ?? "P-384";
  const keys = o.keys ?? (await ecKeys(curve));
  const ca = o.ca ?? !o.issuer;
  const notBefore = o.notBefore ?? new Date(Date.now() - 86400_000);
  const notAfter = o.notAfter ?? new Date(Date.now() + 365 * 86400_000);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(ca, o.pathLength, true),
    new x509.KeyUsagesExtension(o.keyUsage ?? (ca ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign : x509.KeyUsageFlags.digitalSignature), true),
    ...(o.extensions ?? []),
  ];
  const issuerCurve = o.issuer?.curve ?? curve;
  const cert = o.issuer
    ? await x509.X509CertificateGenerator.create({
        subject: `CN=${o.name}`,
        issuer: o.issuer.cert.subject,
        publicKey: keys.publicKey,
        signingKey: o.issuer.keys.privateKey,
        signingAlgorithm: { name: "ECDSA", hash: hashFor(issuerCurve) },
        notBefore,
        notAfter,
        extensions,
        serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString("hex").replace(/^[89a-f]/, "1"),
      })
    : await x509.X509CertificateGenerator.createSelfSigned({
        name: `CN=${o.name}`,
        keys,
        signingAlgorithm: { name: "ECDSA", hash: hashFor(curve) },
        notBefore,
        notAfter,
        extensions,
        serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString("hex").replace(/^[89a-f]/, "1"),
      });
  return { cert, der: Buffer.from(cert.rawData), keys, curve };
}
