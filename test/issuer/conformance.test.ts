import { describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { OID, name } from "../../src/issuer/der.js";
import { createRootCa } from "../../src/issuer/certificates.js";
import { checkSigningCertConformance, checkX509SvidConformance } from "../../src/issuer/conformance.js";
import { createSoftwareSigner } from "../../src/issuer/file-signer.js";
import {
  KEY_USAGE,
  basicConstraints,
  extKeyUsage,
  keyUsage,
  randomSerial,
  signCertificate,
  subjectAltName,
  type Extension,
} from "../../src/issuer/x509-builder.js";
import { TrustDomain } from "../../src/spiffe/id.js";

const td = TrustDomain.parse("example.org");
const now = new Date();
const caSigner = createSoftwareSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "ca");
const leafSpki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });

/** Deliberately broken leaves, built with the same builder the issuer uses, one MUST broken each. */
async function leaf(extensions: Extension[], notAfter = new Date(now.getTime() + 3600_000)): Promise<Buffer> {
  return signCertificate(
    { serial: randomSerial(), issuer: name([[OID.organization, "test"]]), subject: name([[OID.organization, "test"]]), notBefore: now, notAfter, spki: leafSpki, extensions },
    caSigner,
    "ecdsa-sha256",
  );
}

const good = () => [basicConstraints(false), keyUsage([KEY_USAGE.digitalSignature]), extKeyUsage([OID.serverAuth]), subjectAltName(["spiffe://example.org/w"])];

describe("X509-SVID conformance checker", () => {
  it("accepts a conformant leaf", async () => {
    expect(checkX509SvidConformance(await leaf(good()), { trustDomain: td }).toString()).toBe("spiffe://example.org/w");
  });

  it.each<[string, () => Extension[], RegExp]>([
    ["no URI SAN", () => good().slice(0, 3), /exactly one URI SAN \(found 0\)/],
    ["two URI SANs", () => [...good().slice(0, 3), subjectAltName(["spiffe://example.org/a", "spiffe://example.org/b"])], /exactly one URI SAN \(found 2\)/],
    ["a URI SAN that is not a SPIFFE ID", () => [...good().slice(0, 3), subjectAltName(["https://example.org/a"])], /valid SPIFFE ID/],
    ["an ID from another trust domain", () => [...good().slice(0, 3), subjectAltName(["spiffe://other.org/a"])], /trust domain example.org/],
    ["cA true", () => [basicConstraints(true), ...good().slice(1)], /cA to false/],
    ["no basicConstraints", () => good().slice(1), /cA to false/],
    ["no key usage", () => [good()[0]!, ...good().slice(2)], /key usage extension/],
    ["keyCertSign", () => [good()[0]!, keyUsage([KEY_USAGE.digitalSignature, KEY_USAGE.keyCertSign]), ...good().slice(2)], /MUST NOT set keyCertSign/],
    ["no digitalSignature", () => [good()[0]!, keyUsage([KEY_USAGE.keyEncipherment]), ...good().slice(2)], /MUST set digitalSignature/],
    ["non-critical key usage", () => [good()[0]!, { ...keyUsage([KEY_USAGE.digitalSignature]), critical: false }, ...good().slice(2)], /marked critical/],
  ])("refuses a leaf with %s", async (_what, extensions, message) => {
    const der = await leaf(extensions());
    expect(() => checkX509SvidConformance(der, { trustDomain: td })).toThrowError(expect.objectContaining({ code: "svid_nonconformant", message: expect.stringMatching(message) }));
  });

  it("refuses a leaf that outlives its signing certificate, or that it did not sign", async () => {
    const ca = await createRootCa({ signer: caSigner, trustDomain: td, keyId: "t", ttlSeconds: 600, now });
    const long = await leaf(good(), new Date(now.getTime() + 86400_000));
    expect(() => checkX509SvidConformance(long, { trustDomain: td, caCertificate: ca })).toThrowError(/outlive/);
    const otherCa = await createRootCa({ signer: createSoftwareSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "o"), trustDomain: td, keyId: "o", ttlSeconds: 86400 * 2, now });
    expect(() => checkX509SvidConformance(long, { trustDomain: td, caCertificate: otherCa })).toThrowError(/does not verify/);
  });

  it("checks signing certificates: cA, keyCertSign, and a bare trust-domain ID", async () => {
    const ca = await createRootCa({ signer: caSigner, trustDomain: td, keyId: "t", ttlSeconds: 600, now });
    expect(() => checkSigningCertConformance(ca, { trustDomain: td })).not.toThrow();
    expect(() => checkSigningCertConformance(ca, { trustDomain: TrustDomain.parse("other.org") })).toThrowError(/trust domain ID/);
    expect(() => checkSigningCertConformance(Buffer.from("nope"), { trustDomain: td })).toThrowError(/cannot be parsed/);
  });
});
