import { beforeAll, describe, expect, it } from "vitest";
import * as x509 from "@peculiar/x509";
import { validateChain } from "../../src/pki/chain.js";
import { parseFingerprint, sha256Fingerprint } from "../../src/pki/certificate.js";
import { haveSharedFixtures, sharedFixture, warnIfNoSharedFixtures } from "../helpers/fixtures.js";
import { type TestCa, testCert } from "../helpers/test-pki.js";
import { pemBlocks } from "../../src/pki/pem.js";

let root: TestCa;
let inter: TestCa;
let leaf: TestCa;
const now = new Date();

beforeAll(async () => {
  root = await testCert({ name: "root" });
  inter = await testCert({ name: "inter", issuer: root, ca: true, pathLength: 0 });
  leaf = await testCert({ name: "leaf", issuer: inter, curve: "P-256" });
});

const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return "accepted";
};

describe("certificate path validation", () => {
  it("accepts leaf → intermediate → pinned root, in any order", () => {
    const v = validateChain({ leaf: leaf.der, intermediates: [root.der, inter.der], anchors: [root.der], at: now });
    expect(v.path.map((c) => c.subject)).toEqual(["CN=leaf", "CN=inter", "CN=root"]);
    expect(v.anchorFingerprint).toBe(sha256Fingerprint(root.der));
  });

  it("refuses a chain to another root", async () => {
    const other = await testCert({ name: "root" }); // same name, other key
    expect(code(() => validateChain({ leaf: leaf.der, intermediates: [inter.der], anchors: [other.der], at: now }))).toBe("pki_signature_invalid");
    const stranger = await testCert({ name: "stranger" });
    expect(code(() => validateChain({ leaf: leaf.der, intermediates: [inter.der], anchors: [stranger.der], at: now }))).toBe("pki_chain_untrusted");
  });

  it("checks every certificate's validity at the given time", async () => {
    expect(code(() => validateChain({ leaf: leaf.der, intermediates: [inter.der], anchors: [root.der], at: new Date(Date.now() + 400 * 86400_000) }))).toBe("pki_cert_expired");
    expect(code(() => validateChain({ leaf: leaf.der, intermediates: [inter.der], anchors: [root.der], at: new Date(Date.now() - 2 * 86400_000) }))).toBe("pki_cert_not_yet_valid");
  });

  it("refuses a tampered signature or TBS", () => {
    const bad = Buffer.from(leaf.der);
    bad.writeUInt8(bad.readUInt8(bad.length - 3) ^ 1, bad.length - 3);
    expect(code(() => validateChain({ leaf: bad, intermediates: [inter.der], anchors: [root.der], at: now }))).toBe("pki_signature_invalid");
  });

  it("refuses an issuer that is not a CA, lacks keyCertSign, or breaks a path length", async () => {
    const notCa = await testCert({ name: "notca", issuer: root, ca: false, keyUsage: x509.KeyUsageFlags.keyCertSign });
    const under = await testCert({ name: "under", issuer: notCa });
    expect(code(() => validateChain({ leaf: under.der, intermediates: [notCa.der], anchors: [root.der], at: now }))).toBe("pki_issuer_not_ca");
    const noSign = await testCert({ name: "nosign", issuer: root, ca: true, keyUsage: x509.KeyUsageFlags.digitalSignature });
    const under2 = await testCert({ name: "under2", issuer: noSign });
    expect(code(() => validateChain({ leaf: under2.der, intermediates: [noSign.der], anchors: [root.der], at: now }))).toBe("pki_key_usage_missing");
    const deeper = await testCert({ name: "deeper", issuer: inter, ca: true });
    const under3 = await testCert({ name: "under3", issuer: deeper });
    expect(code(() => validateChain({ leaf: under3.der, intermediates: [inter.der, deeper.der], anchors: [root.der], at: now }))).toBe("pki_path_length_exceeded");
  });

  it("refuses unknown critical extensions unless the caller handles them", async () => {
    const odd = await testCert({ name: "odd", issuer: inter, extensions: [new x509.Extension("1.2.3.4.5", true, new Uint8Array([5, 0]))] });
    expect(code(() => validateChain({ leaf: odd.der, intermediates: [inter.der], anchors: [root.der], at: now }))).toBe("pki_unhandled_critical_extension");
    expect(code(() => validateChain({ leaf: odd.der, intermediates: [inter.der], anchors: [root.der], at: now, handledCriticalExtensions: ["1.2.3.4.5"] }))).toBe("accepted");
  });

  it("refuses garbage as a certificate", () => {
    expect(code(() => validateChain({ leaf: Buffer.from("not a cert"), intermediates: [], anchors: [root.der], at: now }))).toBe("pki_cert_malformed");
  });
});

describe("real chains from ../shared/fixtures", () => {
  warnIfNoSharedFixtures("real AMD and AWS chains");
  it.skipIf(!haveSharedFixtures).each(["Milan", "Genoa", "Turin"])("validates the AMD %s ASK against its ARK (RSA-PSS SHA-384)", (product) => {
    const [ask, ark] = pemBlocks(sharedFixture(`amd-sev-snp/cert_chain-vcek-${product}.pem`).toString());
    const arkCert = new x509.X509Certificate(ark!);
    const at = new Date((arkCert.notBefore.getTime() + arkCert.notAfter.getTime()) / 2);
    const v = validateChain({ leaf: ask!, intermediates: [], anchors: [ark!], at });
    expect(v.path).toHaveLength(2);
  });

  it.skipIf(!haveSharedFixtures)("pins the AWS Nitro root by its published fingerprint", () => {
    const [root] = pemBlocks(sharedFixture("aws-nitro/aws-nitro-enclaves-root-g1.pem").toString());
    expect(sha256Fingerprint(root!)).toBe(parseFingerprint("64:1A:03:21:A3:E2:44:EF:E4:56:46:31:95:D6:06:31:7E:D7:CD:CC:3C:17:56:E0:98:93:F3:C6:8F:79:BB:5B"));
    expect(validateChain({ leaf: root!, intermediates: [], anchors: [root!], at: new Date("2030-01-01") }).path).toHaveLength(1);
  });
});
