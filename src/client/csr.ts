import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export type ClientKeyType = "ec-p256" | "ec-p384";

const KEY_PARAMS: Record<ClientKeyType, { gen: webcrypto.EcKeyGenParams; sign: webcrypto.EcdsaParams }> = {
  "ec-p256": { gen: { name: "ECDSA", namedCurve: "P-256" }, sign: { name: "ECDSA", hash: "SHA-256" } },
  "ec-p384": { gen: { name: "ECDSA", namedCurve: "P-384" }, sign: { name: "ECDSA", hash: "SHA-384" } },
};

export interface ClientKey {
  privateKeyPem: string;
  csrPem: string;
  spki: Buffer;
}

/**
 * A fresh key pair for an SVID, made on the caller's machine (the server never sees the
 * private key), and a CSR proving possession of it. The CSR carries no SAN: the server decides
 * the identity from attestation or entitlement.
 */
export async function newClientKey(keyType: ClientKeyType = "ec-p256"): Promise<ClientKey> {
  const p = KEY_PARAMS[keyType];
  const keys = (await webcrypto.subtle.generateKey(p.gen, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "O=Hallmark client",
    keys,
    signingAlgorithm: p.sign,
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  const spki = Buffer.from(await webcrypto.subtle.exportKey("spki", keys.publicKey));
  const b64 = pkcs8.toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "");
  return {
    privateKeyPem: `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`,
    csrPem: csr.toString("pem"),
    spki,
  };
}
