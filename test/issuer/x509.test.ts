import { afterAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { execFileSync, spawnSync } from "node:child_process";
import { X509Certificate, generateKeyPairSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pemChain } from "../../src/pki/pem.js";
import { checkSigningCertConformance, checkX509SvidConformance } from "../../src/issuer/conformance.js";
import { createSoftwareSigner } from "../../src/issuer/file-signer.js";
import { createIntermediateCa, createRootCa } from "../../src/issuer/x509-ca.js";
import { issueX509Svid } from "../../src/issuer/x509-svid.js";
import { issuerFacts, signCertificate } from "../../src/issuer/x509-builder.js";
import { TrustDomain } from "../../src/spiffe/id.js";
import { tempDir } from "../helpers/tmp.js";
import { timeOrderedSerial } from "../../src/time-ordered-id.js";

const dir = tempDir("x509");
afterAll(() => dir.remove());

const td = TrustDomain.parse("example.org");
const now = new Date("2031-05-01T08:00:00Z");
const at = String(Math.floor(now.getTime() / 1000) + 60);
const ec = (curve: string) => createSoftwareSigner(generateKeyPairSync("ec", { namedCurve: curve }).privateKey, curve);
const rsa = () => createSoftwareSigner(generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey, "rsa");
const leafSpki = (type: "ec" | "rsa" = "ec") =>
  (type === "ec" ? generateKeyPairSync("ec", { namedCurve: "P-256" }) : generateKeyPairSync("rsa", { modulusLength: 2048 })).publicKey.export({ type: "spki", format: "der" });

let n = 0;
function file(ders: Buffer[]): string {
  const p = join(dir.path, `f${n++}.pem`);
  writeFileSync(p, pemChain(ders));
  return p;
}

/** openssl verify (strict X.509 checks) of `leaf` against `roots`, with `intermediates` untrusted. */
function opensslVerify(roots: Buffer[], leaf: Buffer, intermediates: Buffer[] = []): string {
  const args = ["verify", "-x509_strict", "-attime", at, "-CAfile", file(roots), ...(intermediates.length ? ["-untrusted", file(intermediates)] : []), file([leaf])];
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  return r.stdout + r.stderr;
}
const opensslText = (der: Buffer) => execFileSync("openssl", ["x509", "-noout", "-text", "-in", file([der])], { encoding: "utf8" });

/** An extension's body lines in `openssl x509 -text` output, e.g. "X509v3 Key Usage: critical". */
function extensionText(text: string, name: string): string {
  const m = new RegExp(`${name}:( critical)? *\\n\\s+(.+)`).exec(text);
  return m ? `${m[1] ? "critical " : ""}${m[2]!.trim()}` : "";
}

describe("root CA", () => {
  it.each([["P-256"], ["P-384"], ["rsa"]])("builds a self-signed %s SPIFFE signing certificate that openssl accepts", async (kind) => {
    const signer = kind === "rsa" ? rsa() : ec(kind);
    const root = await createRootCa({ signer, trustDomain: td, ttlSeconds: 86400, now });
    expect(opensslVerify([root], root)).toContain(": OK");
    const text = opensslText(root);
    expect(extensionText(text, "X509v3 Basic Constraints")).toBe("critical CA:TRUE");
    expect(extensionText(text, "X509v3 Key Usage")).toBe("critical Digital Signature, Certificate Sign, CRL Sign");
    expect(extensionText(text, "X509v3 Subject Alternative Name")).toBe("URI:spiffe://example.org");
    expect(extensionText(text, "X509v3 Subject Key Identifier")).toMatch(/^([0-9A-F]{2}:){19}[0-9A-F]{2}$/);
    const cert = new X509Certificate(root);
    expect(cert.subject).toBe(cert.issuer);
    expect(cert.subject).toContain("O=example.org");
    expect(new Date(cert.validFrom).getTime()).toBe(now.getTime() - 10_000);
    expect(new Date(cert.validTo).getTime()).toBe(now.getTime() + 86400_000);
    expect(cert.publicKey.equals(signer.publicKey)).toBe(true);
    checkSigningCertConformance(root, { trustDomain: td, issuerCertificate: root });
  });

  it("takes a custom subject, and two roots of one trust domain get distinct serials and names", async () => {
    const a = await createRootCa({ signer: ec("P-256"), trustDomain: td, ttlSeconds: 60, now, subject: { organization: "Acme", commonName: "Acme Root" } });
    expect(new X509Certificate(a).subject).toBe("O=Acme\nCN=Acme Root");
    const b = await createRootCa({ signer: ec("P-256"), trustDomain: td, ttlSeconds: 60, now });
    const c = await createRootCa({ signer: ec("P-256"), trustDomain: td, ttlSeconds: 60, now });
    expect(new X509Certificate(b).serialNumber).not.toBe(new X509Certificate(c).serialNumber);
    expect(new X509Certificate(b).subject).not.toBe(new X509Certificate(c).subject);
  });

  it("refuses a TTL that is not a positive whole number of seconds", async () => {
    for (const ttlSeconds of [0, -1, 0.5, Number.POSITIVE_INFINITY]) {
      await expect(createRootCa({ signer: ec("P-256"), trustDomain: td, ttlSeconds, now })).rejects.toMatchObject({ code: "ttl_invalid" });
    }
  });

  it("signs with RSASSA-PSS and explicit parameters when asked, which openssl verifies", async () => {
    const signer = rsa();
    const root = await createRootCa({ signer, trustDomain: td, ttlSeconds: 86400, now });
    const facts = issuerFacts(root);
    const pss = await signCertificate(
      { serial: timeOrderedSerial(), issuer: facts.subject, subject: facts.subject, notBefore: now, notAfter: new Date(now.getTime() + 3600_000), spki: facts.spki, extensions: [] },
      signer,
      "rsa-pss-sha256",
    );
    const text = opensslText(pss);
    expect(text).toContain("Signature Algorithm: rsassaPss");
    expect(text).toMatch(/Hash Algorithm: sha256/);
    expect(text).toMatch(/Mask Algorithm: mgf1 with sha256/);
    expect(text).toMatch(/Salt Length: 0x20/);
    expect(new X509Certificate(pss).verify(signer.publicKey)).toBe(true);
  });
});

describe("X509-SVID", () => {
  it.each<["ec" | "rsa", string]>([
    ["ec", "critical Digital Signature"],
    ["rsa", "critical Digital Signature, Key Encipherment"],
  ])("issues a leaf for a %s key that openssl verifies, with every SVID property", async (keyType, keyUsage) => {
    const caSigner = ec("P-256");
    const root = await createRootCa({ signer: caSigner, trustDomain: td, ttlSeconds: 86400, now });
    const spki = leafSpki(keyType);
    const svid = await issueX509Svid({ ca: { signer: caSigner, certificate: root }, spki, spiffeId: td.id("/ns/prod/sa/api"), ttlSeconds: 3600, now, dnsNames: ["api.example.org"] });
    expect(opensslVerify([root], svid.der)).toContain(": OK");
    const text = opensslText(svid.der);
    expect(extensionText(text, "X509v3 Basic Constraints")).toBe("critical CA:FALSE");
    expect(extensionText(text, "X509v3 Key Usage")).toBe(keyUsage);
    expect(extensionText(text, "X509v3 Extended Key Usage")).toBe("TLS Web Server Authentication, TLS Web Client Authentication");
    expect(extensionText(text, "X509v3 Subject Alternative Name")).toBe("URI:spiffe://example.org/ns/prod/sa/api, DNS:api.example.org");
    expect(extensionText(text, "X509v3 Authority Key Identifier")).toContain(extensionText(opensslText(root), "X509v3 Subject Key Identifier"));
    expect(extensionText(text, "X509v3 Subject Key Identifier")).toMatch(/^([0-9A-F]{2}:){19}[0-9A-F]{2}$/);
    const cert = new X509Certificate(svid.der);
    expect(cert.serialNumber.length).toBe(32); // 16 octets, positive: no pad byte needed
    expect(cert.serialNumber.toLowerCase()).toBe(svid.serialHex);
    expect(new Date(cert.validFrom).getTime()).toBe(now.getTime() - 10_000);
    expect(new Date(cert.validTo).getTime()).toBe(now.getTime() + 3600_000);
    expect(svid.notAfter.getTime()).toBe(now.getTime() + 3600_000);
    expect(cert.publicKey.export({ type: "spki", format: "der" }).equals(spki)).toBe(true);
    expect(cert.subject).toBe("O=SPIFFE");
    checkX509SvidConformance(svid.der, { trustDomain: td, caCertificate: root });
  });

  it("caps notAfter at the CA's notAfter and refuses to issue once the CA has expired", async () => {
    const caSigner = ec("P-256");
    const root = await createRootCa({ signer: caSigner, trustDomain: td, ttlSeconds: 600, now });
    const svid = await issueX509Svid({ ca: { signer: caSigner, certificate: root }, spki: leafSpki(), spiffeId: td.id("/w"), ttlSeconds: 86400, now });
    expect(svid.notAfter.toISOString()).toBe(new Date(new X509Certificate(root).validTo).toISOString());
    await expect(
      issueX509Svid({ ca: { signer: caSigner, certificate: root }, spki: leafSpki(), spiffeId: td.id("/w"), ttlSeconds: 60, now: new Date(now.getTime() + 601_000) }),
    ).rejects.toMatchObject({ code: "ca_not_ready" });
  });

  it("refuses bad TTLs, bad DNS names, IDs outside the CA's trust domain, and unreadable keys", async () => {
    const caSigner = ec("P-256");
    const root = await createRootCa({ signer: caSigner, trustDomain: td, ttlSeconds: 600, now });
    const base = { ca: { signer: caSigner, certificate: root }, spki: leafSpki(), spiffeId: td.id("/w"), ttlSeconds: 60, now };
    await expect(issueX509Svid({ ...base, ttlSeconds: 0 })).rejects.toMatchObject({ code: "ttl_invalid" });
    for (const dnsNames of [["bad name"], ["-x.example"], ["a".repeat(64) + ".example"], Array.from({ length: 33 }, (_, i) => `h${i}.example`)]) {
      await expect(issueX509Svid({ ...base, dnsNames })).rejects.toMatchObject({ code: "invalid_request" });
    }
    await expect(issueX509Svid({ ...base, spki: Buffer.from("3000", "hex") })).rejects.toMatchObject({ code: "csr_key_unsupported" });
    // The CA names its trust domain in its URI SAN: it issues for no other.
    await expect(issueX509Svid({ ...base, spiffeId: TrustDomain.parse("other.org").id("/w") })).rejects.toMatchObject({ code: "spiffe_id_outside_trust_domain" });
  });
});

describe("X509-SVID, any identity", () => {
  it("round-trips random SPIFFE IDs and DNS names of every length through node's parser and the conformance check", async () => {
    const caSigner = ec("P-256");
    const root = await createRootCa({ signer: caSigner, trustDomain: td, ttlSeconds: 86400, now });
    const segment = fc.stringMatching(/^[A-Za-z0-9._-]{1,60}$/).filter((s) => s !== "." && s !== "..");
    const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/);
    await fc.assert(
      fc.asyncProperty(fc.array(segment, { minLength: 1, maxLength: 30 }), fc.array(fc.array(label, { minLength: 1, maxLength: 4 }), { maxLength: 5 }), async (segments, hosts) => {
        const id = td.id(`/${segments.join("/")}`);
        const dnsNames = hosts.map((h) => h.join("."));
        const svid = await issueX509Svid({ ca: { signer: caSigner, certificate: root }, spki: leafSpki(), spiffeId: id, ttlSeconds: 60, now, dnsNames });
        const cert = new X509Certificate(svid.der);
        expect(cert.verify(new X509Certificate(root).publicKey)).toBe(true);
        expect(cert.subjectAltName).toBe([`URI:${id.toString()}`, ...dnsNames.map((d) => `DNS:${d}`)].join(", "));
        expect(checkX509SvidConformance(svid.der, { trustDomain: td, caCertificate: root }).equals(id)).toBe(true);
      }),
      { numRuns: 60 },
    );
  });
});

describe("intermediate mode", () => {
  it("chains leaf → our intermediate → upstream intermediate → upstream root, which openssl verifies", async () => {
    const upRootSigner = ec("P-384");
    const upRoot = await createRootCa({ signer: upRootSigner, trustDomain: TrustDomain.parse("corp.example"), ttlSeconds: 10 * 86400, now });
    const upIntSigner = rsa();
    const upInt = await createIntermediateCa({ signer: upIntSigner, upstream: { signer: upRootSigner, certificate: upRoot }, trustDomain: TrustDomain.parse("corp.example"), ttlSeconds: 5 * 86400, now });
    const ourSigner = ec("P-256");
    const ours = await createIntermediateCa({ signer: ourSigner, upstream: { signer: upIntSigner, certificate: upInt }, trustDomain: td, ttlSeconds: 30 * 86400, now });
    // Capped by the upstream's notAfter; AKI is the upstream's SKI.
    expect(new X509Certificate(ours).validTo).toBe(new X509Certificate(upInt).validTo);
    expect(extensionText(opensslText(ours), "X509v3 Authority Key Identifier")).toContain(extensionText(opensslText(upInt), "X509v3 Subject Key Identifier"));
    expect(new X509Certificate(ours).checkIssued(new X509Certificate(upInt))).toBe(true);
    checkSigningCertConformance(ours, { trustDomain: td, issuerCertificate: upInt });

    const svid = await issueX509Svid({ ca: { signer: ourSigner, certificate: ours }, spki: leafSpki(), spiffeId: td.id("/w"), ttlSeconds: 3600, now });
    expect(opensslVerify([upRoot], svid.der, [ours, upInt])).toContain(": OK");
    // Without our intermediate the path does not build: the leaf really hangs off it.
    expect(opensslVerify([upRoot], svid.der, [upInt])).not.toContain(": OK");
  });

  it("refuses an upstream key that does not match the upstream certificate, or an expired upstream", async () => {
    const upSigner = ec("P-256");
    const upRoot = await createRootCa({ signer: upSigner, trustDomain: td, ttlSeconds: 60, now });
    await expect(createIntermediateCa({ signer: ec("P-256"), upstream: { signer: ec("P-256"), certificate: upRoot }, trustDomain: td, ttlSeconds: 60, now })).rejects.toMatchObject({
      code: "config_invalid",
    });
    await expect(
      createIntermediateCa({ signer: ec("P-256"), upstream: { signer: upSigner, certificate: upRoot }, trustDomain: td, ttlSeconds: 60, now: new Date(now.getTime() + 120_000) }),
    ).rejects.toMatchObject({ code: "config_invalid" });
  });
});
