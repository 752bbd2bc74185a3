import { writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { loadServerConfig } from "../../src/config/server.js";
import { ipAddressBytes } from "../../src/pki/subject-names.js";
import { serverCertificateNames } from "../../src/server/tls-identity.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("subject-names");
afterAll(() => dir.remove());

describe("ipAddressBytes", () => {
  it("encodes IPv4 in 4 octets and IPv6 in 16, an embedded dotted quad included", () => {
    expect(ipAddressBytes("127.0.0.1")?.toString("hex")).toBe("7f000001");
    expect(ipAddressBytes("::1")?.toString("hex")).toBe(`${"00".repeat(15)}01`);
    expect(ipAddressBytes("::")?.toString("hex")).toBe("00".repeat(16));
    expect(ipAddressBytes("2001:db8::10")?.toString("hex")).toBe("20010db8000000000000000000000010");
    expect(ipAddressBytes("fe80::")?.toString("hex")).toBe(`fe80${"00".repeat(14)}`);
    expect(ipAddressBytes("::ffff:192.0.2.1")?.toString("hex")).toBe("00000000000000000000ffffc0000201");
  });

  it("refuses what is not one address", () => {
    for (const bad of ["", "localhost", "256.0.0.1", "1.2.3", "01.2.3.4", "1::2::3", "fe80::1%eth0", "12345::", "1.2.3.4/32", " 1.2.3.4"]) {
      expect([bad, ipAddressBytes(bad)]).toEqual([bad, undefined]);
    }
  });

  it("reads back any IPv6 address in the compressed form WHATWG URL parsing writes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.boolean(), (bytes, zeroRun) => {
        const b = Buffer.from(bytes);
        if (zeroRun) b.fill(0, 4, 12); // make "::" compression likely
        const text = new URL(`http://[${[...Array(8).keys()].map((i) => b.readUInt16BE(i * 2).toString(16)).join(":")}]/`).hostname.slice(1, -1);
        expect(ipAddressBytes(text)?.equals(b)).toBe(true);
      }),
    );
  });
});

describe("serverCertificateNames", () => {
  const none = { dnsNames: [], ipAddresses: [] };
  it("names an IP listen address, and loopback for a wildcard one", () => {
    expect(serverCertificateNames("127.0.0.1", none)).toEqual({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
    expect(serverCertificateNames("10.1.2.3", none)).toEqual({ dnsNames: ["localhost"], ipAddresses: ["10.1.2.3"] });
    expect(serverCertificateNames("0.0.0.0", none)).toEqual({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
    expect(serverCertificateNames("::", none)).toEqual({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"] });
    expect(serverCertificateNames("hallmark.example", none)).toEqual({ dnsNames: ["localhost", "hallmark.example"], ipAddresses: [] });
  });

  it("adds the configured names once each", () => {
    expect(serverCertificateNames("0.0.0.0", { dnsNames: ["localhost", "id.example.org"], ipAddresses: ["127.0.0.1", "203.0.113.7"] })).toEqual({
      dnsNames: ["localhost", "id.example.org"],
      ipAddresses: ["127.0.0.1", "203.0.113.7"],
    });
  });

  it("refuses bad tls names and a bad jwt.issuer in the configuration, one line per field", () => {
    const file = join(dir.path, "bad.yaml");
    writeFileSync(file, "tls:\n  dnsNames: ['not a name']\n  ipAddresses: [10.0.0.256]\njwt:\n  issuer: https://oidc.example.org/\n");
    let message = "";
    try {
      loadServerConfig({ config: file }, {});
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain("tls.dnsNames.0: must be a DNS name");
    expect(message).toContain("tls.ipAddresses.0: must be an IPv4 or IPv6 address");
    expect(message).toContain("jwt.issuer: must be an https URL without query, fragment or trailing slash");
  });
});
