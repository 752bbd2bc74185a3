import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { generateKeyPairSync } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import { Certificate, type TBSCertificate, Version } from "@peculiar/asn1-x509";
import { bitString, sequence } from "../../src/issuer/der.js";
import { rawEcdsaToDer } from "../../src/issuer/signature-formats.js";
import { isHallmarkError } from "../../src/errors.js";
import { checkSigningCertConformance, checkX509SvidConformance } from "../../src/issuer/conformance.js";
import { createSoftwareSigner } from "../../src/issuer/file-signer.js";
import { createRootCa } from "../../src/issuer/x509-ca.js";
import { issueX509Svid } from "../../src/issuer/x509-svid.js";
import {
  DN,
  EKU,
  authorityKeyIdentifierExtension,
  basicConstraintsExtension,
  distinguishedName,
  extKeyUsageExtension,
  issuerFacts,
  keyUsageExtension,
  signCertificate,
  subjectAltNameExtension,
} from "../../src/issuer/x509-builder.js";
import { TrustDomain } from "../../src/spiffe/id.js";
import { timeOrderedSerial } from "../../src/time-ordered-id.js";

const td = TrustDomain.parse("example.org");
const now = new Date("2030-06-01T00:00:00Z");
const caSigner = createSoftwareSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "ca");
const leafSpki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });
const caCert = await createRootCa({ signer: caSigner, trustDomain: td, ttlSeconds: 86400, now });
const ca = issuerFacts(caCert);

/** A leaf under the test CA, built with the issuer's own parts but one MUST broken at a time. */
async function leaf(o: { extensions: Buffer[]; notAfter?: Date; serial?: Buffer; emptySubject?: boolean }): Promise<Buffer> {
  return signCertificate(
    {
      serial: o.serial ?? timeOrderedSerial(),
      issuer: ca.subject,
      subject: o.emptySubject ? distinguishedName([]) : distinguishedName([[DN.organization, "SPIFFE"]]),
      notBefore: now,
      notAfter: o.notAfter ?? new Date(now.getTime() + 3600_000),
      spki: leafSpki,
      extensions: o.extensions,
    },
    caSigner,
    "ecdsa-sha256",
  );
}

const bc = () => basicConstraintsExtension(false);
const ku = () => keyUsageExtension(["digitalSignature"]);
const eku = () => extKeyUsageExtension([EKU.serverAuth, EKU.clientAuth]);
const san = (...uris: string[]) => subjectAltNameExtension(uris.length ? uris : ["spiffe://example.org/w"]);
const good = () => [bc(), ku(), eku(), san()];

function ruleOf(f: () => unknown): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    expect(e).toMatchObject({ code: "svid_nonconformant" });
    return (e as { internal?: string }).internal;
  }
}

describe("X509-SVID conformance checker", () => {
  it("accepts a conformant leaf, and what issueX509Svid makes", async () => {
    expect(checkX509SvidConformance(await leaf({ extensions: good() }), { trustDomain: td, caCertificate: caCert }).toString()).toBe("spiffe://example.org/w");
    const issued = await issueX509Svid({ ca: { signer: caSigner, certificate: caCert }, spki: leafSpki, spiffeId: td.id("/a/b"), ttlSeconds: 60, now });
    expect(checkX509SvidConformance(issued.der, { trustDomain: td, caCertificate: caCert }).toString()).toBe("spiffe://example.org/a/b");
  });

  it.each<[string, () => Parameters<typeof leaf>[0], string]>([
    ["no URI SAN", () => ({ extensions: [bc(), ku(), eku()] }), "uri_san_count"],
    ["two URI SANs (§2)", () => ({ extensions: [bc(), ku(), eku(), san("spiffe://example.org/a", "spiffe://example.org/b")] }), "uri_san_count"],
    ["a URI SAN that is not a SPIFFE ID", () => ({ extensions: [bc(), ku(), eku(), san("https://example.org/a")] }), "spiffe_id"],
    ["an ID from another trust domain", () => ({ extensions: [bc(), ku(), eku(), san("spiffe://other.org/a")] }), "spiffe_id"],
    ["the trust domain's own ID, no path (§3.1)", () => ({ extensions: [bc(), ku(), eku(), san("spiffe://example.org")] }), "spiffe_id"],
    ["an empty Subject and a non-critical SAN (§3.1)", () => ({ extensions: good(), emptySubject: true }), "san_critical_without_subject"],
    ["cA true (§4.1)", () => ({ extensions: [basicConstraintsExtension(true), ku(), eku(), san()] }), "basic_constraints"],
    ["no basicConstraints", () => ({ extensions: [ku(), eku(), san()] }), "basic_constraints"],
    ["no key usage (§4.3)", () => ({ extensions: [bc(), eku(), san()] }), "key_usage_missing"],
    ["non-critical key usage", () => ({ extensions: [bc(), keyUsageExtension(["digitalSignature"], false), eku(), san()] }), "key_usage_critical"],
    ["no digitalSignature", () => ({ extensions: [bc(), keyUsageExtension(["keyEncipherment"]), eku(), san()] }), "key_usage_digital_signature"],
    ["keyCertSign", () => ({ extensions: [bc(), keyUsageExtension(["digitalSignature", "keyCertSign"]), eku(), san()] }), "key_usage_ca_bits"],
    ["cRLSign", () => ({ extensions: [bc(), keyUsageExtension(["digitalSignature", "cRLSign"]), eku(), san()] }), "key_usage_ca_bits"],
    ["EKU without clientAuth (§4.4)", () => ({ extensions: [bc(), ku(), extKeyUsageExtension([EKU.serverAuth]), san()] }), "ext_key_usage"],
    ["a duplicated extension", () => ({ extensions: [bc(), ku(), eku(), san(), bc()] }), "duplicate_extension"],
    ["a serial longer than 20 octets", () => ({ extensions: good(), serial: Buffer.alloc(21, 0x11) }), "serial"],
    ["notAfter past the CA's", () => ({ extensions: good(), notAfter: new Date(now.getTime() + 2 * 86400_000) }), "validity"],
  ])("refuses a leaf with %s", async (_what, build, rule) => {
    const der = await leaf(build());
    expect(ruleOf(() => checkX509SvidConformance(der, { trustDomain: td, caCertificate: caCert }))).toBe(rule);
  });

  it.each<[string, (tbs: TBSCertificate) => void, string]>([
    ["a negative serial", (tbs) => (tbs.serialNumber = new Uint8Array([0xff, 0x01]).buffer), "serial"],
    ["a zero serial", (tbs) => (tbs.serialNumber = new Uint8Array([0]).buffer), "serial"],
    ["version 1 with extensions", (tbs) => (tbs.version = Version.v1), "version"],
  ])("refuses a leaf with %s (re-encoded by hand, which our builder cannot produce)", async (_what, mutate, rule) => {
    const tbs = AsnConvert.parse(await leaf({ extensions: good() }), Certificate).tbsCertificate;
    mutate(tbs);
    const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
    const sig = await caSigner.sign(tbsDer, "ecdsa-sha256");
    const der = sequence(tbsDer, Buffer.from(AsnConvert.serialize(tbs.signature)), bitString(rawEcdsaToDer(sig)!));
    expect(ruleOf(() => checkX509SvidConformance(der, { trustDomain: td, caCertificate: caCert }))).toBe(rule);
  });

  it("refuses a leaf its signing certificate did not sign, or that names another issuer", async () => {
    const der = await leaf({ extensions: good() });
    const otherSigner = createSoftwareSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "o");
    const otherCa = await createRootCa({ signer: otherSigner, trustDomain: td, ttlSeconds: 86400, now });
    expect(ruleOf(() => checkX509SvidConformance(der, { trustDomain: td, caCertificate: otherCa }))).toBe("issuer_name");
    // Same subject and key id claims, but the bytes were signed by someone else.
    const forged = await signCertificate(
      { serial: timeOrderedSerial(), issuer: ca.subject, subject: distinguishedName([[DN.organization, "SPIFFE"]]), notBefore: now, notAfter: new Date(now.getTime() + 60_000), spki: leafSpki, extensions: good() },
      otherSigner,
      "ecdsa-sha256",
    );
    expect(ruleOf(() => checkX509SvidConformance(forged, { trustDomain: td, caCertificate: caCert }))).toBe("signature");
  });

  it("refuses an authority key identifier that is not the CA's, and a 'CA' that is no CA", async () => {
    const wrongAki = await leaf({ extensions: [...good(), authorityKeyIdentifierExtension(Buffer.alloc(20, 7))] });
    expect(ruleOf(() => checkX509SvidConformance(wrongAki, { trustDomain: td, caCertificate: caCert }))).toBe("authority_key_id");
    const rightAki = await leaf({ extensions: [...good(), authorityKeyIdentifierExtension(ca.keyId)] });
    expect(checkX509SvidConformance(rightAki, { trustDomain: td, caCertificate: caCert }).toString()).toBe("spiffe://example.org/w");
    expect(ruleOf(() => checkX509SvidConformance(rightAki, { trustDomain: td, caCertificate: rightAki }))).toBe("basic_constraints");
  });

  it("verifies RSA PKCS#1 and RSASSA-PSS signatures too", async () => {
    const rsaSigner = createSoftwareSigner(generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey, "rsa");
    const rsaCa = await createRootCa({ signer: rsaSigner, trustDomain: td, ttlSeconds: 86400, now });
    const rsaFacts = issuerFacts(rsaCa);
    for (const scheme of ["rsa-pkcs1-sha256", "rsa-pss-sha256", "rsa-pss-sha384"] as const) {
      const der = await signCertificate(
        { serial: timeOrderedSerial(), issuer: rsaFacts.subject, subject: distinguishedName([[DN.organization, "SPIFFE"]]), notBefore: now, notAfter: new Date(now.getTime() + 60_000), spki: leafSpki, extensions: good() },
        rsaSigner,
        scheme,
      );
      expect(checkX509SvidConformance(der, { trustDomain: td, caCertificate: rsaCa }).toString()).toBe("spiffe://example.org/w");
      const flipped = Buffer.from(der);
      flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1;
      expect(ruleOf(() => checkX509SvidConformance(flipped, { trustDomain: td, caCertificate: rsaCa }))).toBe("signature");
    }
  });

  it("checks signing certificates: cA, keyCertSign, a bare trust-domain ID", async () => {
    expect(() => checkSigningCertConformance(caCert, { trustDomain: td, issuerCertificate: caCert })).not.toThrow();
    expect(ruleOf(() => checkSigningCertConformance(caCert, { trustDomain: TrustDomain.parse("other.org") }))).toBe("spiffe_id");
    const leafDer = await leaf({ extensions: good() });
    expect(ruleOf(() => checkSigningCertConformance(leafDer, { trustDomain: td }))).toBe("basic_constraints");
    const noCertSign = await leaf({ extensions: [basicConstraintsExtension(true), keyUsageExtension(["cRLSign"])] });
    expect(ruleOf(() => checkSigningCertConformance(noCertSign, { trustDomain: td }))).toBe("key_usage_key_cert_sign");
    // A signing certificate is not a leaf: its SPIFFE ID has no path.
    expect(ruleOf(() => checkX509SvidConformance(caCert, { trustDomain: td }))).toBe("spiffe_id");
  });

  it("only ever throws svid_nonconformant on arbitrary bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        for (const check of [() => checkX509SvidConformance(bytes, { trustDomain: td }), () => checkSigningCertConformance(bytes, { trustDomain: td })]) {
          try {
            check();
          } catch (e) {
            if (!isHallmarkError(e) || e.code !== "svid_nonconformant") throw e;
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it("refuses a leaf with any single bit flipped in its signed part", async () => {
    const der = await leaf({ extensions: good() });
    const tbs = AsnConvert.serialize(AsnConvert.parse(der, Certificate).tbsCertificate);
    // The TBSCertificate starts right after the outer header (4 bytes for a certificate of this size).
    const tbsStart = 4;
    fc.assert(
      fc.property(fc.integer({ min: tbsStart * 8, max: (tbsStart + tbs.byteLength) * 8 - 1 }), (bit) => {
        const flipped = Buffer.from(der);
        flipped[bit >> 3] = (flipped[bit >> 3] ?? 0) ^ (0x80 >> (bit & 7));
        expect(() => checkX509SvidConformance(flipped, { trustDomain: td, caCertificate: caCert })).toThrowError(expect.objectContaining({ code: "svid_nonconformant" }));
      }),
      { numRuns: 200 },
    );
  });
});
