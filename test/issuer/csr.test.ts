import { afterAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { execFileSync } from "node:child_process";
import { type KeyObject, createPublicKey, generateKeyPairSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { isHallmarkError } from "../../src/errors.js";
import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";
import { newClientKey } from "../../src/client/csr.js";
import { parseCsr } from "../../src/issuer/csr.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("csr");
afterAll(() => dir.remove());

let n = 0;
/** A CSR made by openssl (an independent implementation), PEM. */
function opensslCsr(privateKey: KeyObject, extensions: string[] = [], signing: string[] = []): string {
  const keyPath = join(dir.path, `k${n++}.pem`);
  writeFileSync(keyPath, privateKey.export({ type: "pkcs8", format: "pem" }));
  const args = ["req", "-new", "-key", keyPath, "-subj", "/O=test", ...signing, ...extensions.flatMap((e) => ["-addext", e])];
  return execFileSync("openssl", args, { encoding: "utf8" });
}
const derOf = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64");

const p256 = generateKeyPairSync("ec", { namedCurve: "P-256" });
const goodPem = opensslCsr(p256.privateKey, ["subjectAltName=URI:spiffe://example.org/w,DNS:w.example.org"]);

const code = (f: () => unknown): string | undefined => {
  try {
    f();
    return undefined;
  } catch (e) {
    if (!isHallmarkError(e)) throw e;
    return e.code;
  }
};

describe("parseCsr", () => {
  it.each<[string, () => KeyObject, string]>([
    ["EC P-256", () => p256.privateKey, "ec-p256"],
    ["EC P-384", () => generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey, "ec-p384"],
    ["RSA 2048", () => generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey, "rsa"],
    ["RSA 4096", () => generateKeyPairSync("rsa", { modulusLength: 4096 }).privateKey, "rsa"],
  ])("accepts an openssl CSR for %s, PEM and DER, returning its exact public key", (_what, key, keyType) => {
    const k = key();
    const pem = opensslCsr(k, ["subjectAltName=URI:spiffe://example.org/w,DNS:a.example.org,DNS:b.example.org"]);
    for (const input of [pem, derOf(pem)]) {
      const csr = parseCsr(input);
      expect(csr.keyType).toBe(keyType);
      expect(csr.spki.toString("hex")).toBe(spkiHex(createPublicKey(k)));
      expect(csr.publicKey.equals(createPublicKey(k))).toBe(true);
      expect(csr.uriSans).toEqual(["spiffe://example.org/w"]);
      expect(csr.dnsSans).toEqual(["a.example.org", "b.example.org"]);
      expect(csr.requestsCa).toBe(false);
    }
  });

  it.each([["ec-p256"], ["ec-p384"]] as const)("accepts the %s CSRs our own client library makes", async (keyType) => {
    const client = await newClientKey(keyType);
    const csr = parseCsr(client.csrPem);
    expect(csr.spki.equals(client.spki)).toBe(true);
    expect(csr.keyType).toBe(keyType);
    expect(csr.uriSans).toEqual([]);
  });

  it("accepts an RSA CSR from @peculiar/x509's generator (WebCrypto RSASSA-PKCS1-v1_5)", async () => {
    const alg = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256", publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
    const keys = (await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
    const req = await x509.Pkcs10CertificateRequestGenerator.create({ name: "O=x", keys, signingAlgorithm: alg, extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org/r" }])] });
    const csr = parseCsr(Buffer.from(req.rawData));
    expect(csr.keyType).toBe("rsa");
    expect(csr.uriSans).toEqual(["spiffe://example.org/r"]);
    expect(csr.spki.equals(Buffer.from(await webcrypto.subtle.exportKey("spki", keys.publicKey)))).toBe(true);
  });

  it.each<[string, () => KeyObject]>([
    ["Ed25519", () => generateKeyPairSync("ed25519").privateKey],
    ["RSA 1024", () => generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey],
    ["EC P-521", () => generateKeyPairSync("ec", { namedCurve: "P-521" }).privateKey],
    ["secp256k1", () => generateKeyPairSync("ec", { namedCurve: "secp256k1" }).privateKey],
    ["DSA", () => generateKeyPairSync("dsa", { modulusLength: 2048, divisorLength: 256 }).privateKey],
  ])("refuses a %s key with csr_key_unsupported", (_what, key) => {
    expect(code(() => parseCsr(opensslCsr(key())))).toBe("csr_key_unsupported");
  });

  it.each([["basicConstraints=critical,CA:TRUE"], ["keyUsage=critical,keyCertSign"], ["keyUsage=cRLSign,digitalSignature"]])(
    "refuses a CSR requesting a CA (%s) with csr_requests_ca, or reports it when allowed",
    (ext) => {
      const pem = opensslCsr(p256.privateKey, [ext]);
      expect(code(() => parseCsr(pem))).toBe("csr_requests_ca");
      expect(parseCsr(pem, { allowCaRequest: true }).requestsCa).toBe(true);
    },
  );

  it.each(["sha256", "sha384", "sha512"])("accepts an RSA CSR that openssl signed with RSASSA-PSS over %s (salt = hash length)", (hash) => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const pem = opensslCsr(rsa.privateKey, [], [`-${hash}`, "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]);
    const csr = parseCsr(pem);
    expect(spkiHex(csr.publicKey)).toBe(spkiHex(rsa.publicKey));
    // The same request with one signature bit flipped no longer proves possession.
    const der = derOf(pem);
    der[der.length - 7] = (der[der.length - 7] ?? 0) ^ 0x10;
    expect(code(() => parseCsr(der))).toBe("csr_signature_invalid");
  });

  it("refuses RSASSA-PSS with parameters other than salt = hash length", () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const pem = opensslCsr(rsa.privateKey, [], ["-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:20"]);
    expect(code(() => parseCsr(pem))).toBe("csr_signature_invalid");
  });

  it("refuses a CSR whose signature does not verify (no proof of possession)", () => {
    const der = derOf(goodPem);
    const tampered = Buffer.from(der);
    tampered[tampered.length - 5] = (tampered[tampered.length - 5] ?? 0) ^ 0x01; // inside the signature
    expect(code(() => parseCsr(tampered))).toBe("csr_signature_invalid");
    // Someone else's key in the request: the signature is by p256, the key is not.
    const other = derOf(opensslCsr(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey));
    const spliced = Buffer.from(der.toString("hex").replace(spkiHex(p256.publicKey), spkiHex(parseCsr(other).publicKey)), "hex");
    expect(code(() => parseCsr(spliced))).toBe("csr_signature_invalid");
  });

  it.each<[string, () => string | Uint8Array]>([
    ["empty input", () => ""],
    ["not PEM", () => "hello"],
    ["two PEM blocks", () => goodPem + goodPem],
    ["text around the block", () => `junk\n${goodPem}`],
    ["bad base64", () => goodPem.replace(/\n([A-Za-z0-9])/, "\n!$1")],
    ["a certificate instead", () => goodPem.replace(/CERTIFICATE REQUEST/g, "CERTIFICATE")],
    ["DER with trailing garbage", () => Buffer.concat([derOf(goodPem), Buffer.from([0])])],
    ["truncated DER", () => derOf(goodPem).subarray(0, 100)],
    ["oversized DER", () => Buffer.concat([derOf(goodPem), Buffer.alloc(9000)])],
  ])("refuses %s with csr_malformed", (_what, input) => {
    expect(code(() => parseCsr(input()))).toBe("csr_malformed");
  });

  it("honours maxBytes", () => {
    expect(code(() => parseCsr(goodPem, { maxBytes: 100 }))).toBe("csr_malformed");
  });

  it("only ever throws HallmarkError on random bytes and random text", () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 400 }), fc.string({ maxLength: 400 })), (input) => {
        expect(code(() => parseCsr(input))).toMatch(/^csr_/);
      }),
      { numRuns: 500 },
    );
  });

  it("refuses the CSR, never crashes, when any single bit is flipped", () => {
    const der = derOf(goodPem);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: der.length * 8 - 1 }), (bit) => {
        const flipped = Buffer.from(der);
        flipped[bit >> 3] = (flipped[bit >> 3] ?? 0) ^ (0x80 >> (bit & 7));
        // Some flips land in bytes no check covers by design (e.g. an unused-bits octet); none may yield a different key.
        const result = code(() => parseCsr(flipped));
        if (result === undefined) expect(parseCsr(flipped).spki.equals(parseCsr(der).spki)).toBe(true);
        else expect(result).toMatch(/^csr_/);
      }),
      { numRuns: 400 },
    );
  });
});

function spkiHex(k: KeyObject): string {
  return k.export({ type: "spki", format: "der" }).toString("hex");
}
