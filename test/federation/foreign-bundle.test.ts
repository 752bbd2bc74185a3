import { describe, expect, it } from "vitest";
import * as x509 from "@peculiar/x509";
import { judgeForeignBundle } from "../../src/federation/foreign-bundle.js";
import { MAX_BUNDLE_BYTES, spiffeBundleJwks } from "../../src/issuer/bundle.js";
import { TrustDomain } from "../../src/spiffe/id.js";
import { testCert } from "../helpers/test-pki.js";

/**
 * The judge of fetched foreign bundles (issue 14), on its own. The interop vector is go-spiffe's
 * v2/bundle/spiffebundle/testdata/spiffebundle_valid_1.json (spiffe/go-spiffe, the library SPIRE
 * builds on; the shape `spire-server bundle show -format spiffe` and SPIRE's bundle endpoint
 * serve), copied as is: an EC P-384 CA whose URI SAN is spiffe://local, and a P-256 JWT key.
 */
const GO_SPIFFE_VALID_1 = `{
    "keys": [
        {
            "use": "x509-svid",
            "kty": "EC",
            "crv": "P-384",
            "x": "WjB-nSGSxIYiznb84xu5WGDZj80nL7W1c3zf48Why0ma7Y7mCBKzfQkrgDguI4j0",
            "y": "Z-0_tDH_r8gtOtLLrIpuMwWHoe4vbVBFte1vj6Xt6WeE8lXwcCvLs_mcmvPqVK9j",
            "x5c": [
                "MIIBzDCCAVOgAwIBAgIJAJM4DhRH0vmuMAoGCCqGSM49BAMEMB4xCzAJBgNVBAYTAlVTMQ8wDQYDVQQKDAZTUElGRkUwHhcNMTgwNTEzMTkzMzQ3WhcNMjMwNTEyMTkzMzQ3WjAeMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGU1BJRkZFMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEWjB+nSGSxIYiznb84xu5WGDZj80nL7W1c3zf48Why0ma7Y7mCBKzfQkrgDguI4j0Z+0/tDH/r8gtOtLLrIpuMwWHoe4vbVBFte1vj6Xt6WeE8lXwcCvLs/mcmvPqVK9jo10wWzAdBgNVHQ4EFgQUh6XzV6LwNazA+GTEVOdu07o5yOgwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYwGQYDVR0RBBIwEIYOc3BpZmZlOi8vbG9jYWwwCgYIKoZIzj0EAwQDZwAwZAIwE4Me13qMC9i6Fkx0h26y09QZIbuRqA9puLg9AeeAAyo5tBzRl1YL0KNEp02VKSYJAjBdeJvqjJ9wW55OGj1JQwDFD7kWeEB6oMlwPbI/5hEY3azJi16I0uN1JSYTSWGSqWc="
            ]
        },
        {
            "use": "jwt-svid",
            "kty": "EC",
            "kid": "C6vs25welZOx6WksNYfbMfiw9l96pMnD",
            "crv": "P-256",
            "x": "ngLYQnlfF6GsojUwqtcEE3WgTNG2RUlsGhK73RNEl5k",
            "y": "tKbiDSUSsQ3F1P7wteeHNXIcU-cx6CgSbroeQrQHTLM"
        }
    ]
}`;

const td = (n: string) => TrustDomain.parse(n);

async function caBundle(name: string, sequence: number): Promise<string> {
  const ca = await testCert({ name, extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: `spiffe://${name}` }])] });
  return JSON.stringify(spiffeBundleJwks({ x509Authorities: [ca.der], jwtAuthorities: [], sequence, refreshHintSeconds: 60 }));
}

describe("judging a foreign bundle", () => {
  it("accepts the SPIRE/go-spiffe bundle shape as is, for its own trust domain", () => {
    const j = judgeForeignBundle(GO_SPIFFE_VALID_1, td("local"));
    expect(j.bundle.x509Authorities).toHaveLength(1);
    expect(j.bundle.jwtAuthorities.map((a) => a.kid)).toEqual(["C6vs25welZOx6WksNYfbMfiw9l96pMnD"]);
    expect(j.sequence).toBeUndefined();
    expect(j.changed).toBe(true);
  });

  it("refuses that bundle under another trust domain's name: its CA names spiffe://local", () => {
    expect(() => judgeForeignBundle(GO_SPIFFE_VALID_1, td("partner.net"))).toThrow(expect.objectContaining({ code: "federation_wrong_trust_domain" }));
  });

  it("refuses a sequence going back, and the same sequence with other keys; the same bundle again is unchanged", async () => {
    const five = await caBundle("c.test", 5);
    const held = judgeForeignBundle(five, td("c.test"));
    expect(judgeForeignBundle(five, td("c.test"), { json: held.json, sequence: 5 }).changed).toBe(false);
    const three = await caBundle("c.test", 3);
    expect(() => judgeForeignBundle(three, td("c.test"), { json: held.json, sequence: 5 })).toThrow(expect.objectContaining({ code: "federation_sequence_regressed" }));
    const otherFive = await caBundle("c.test", 5);
    expect(() => judgeForeignBundle(otherFive, td("c.test"), { json: held.json, sequence: 5 })).toThrow(expect.objectContaining({ code: "federation_sequence_regressed" }));
    const six = await caBundle("c.test", 6);
    expect(judgeForeignBundle(six, td("c.test"), { json: held.json, sequence: 5 }).changed).toBe(true);
  });

  it("refuses oversized, non-JSON, keyless-shaped and unusable documents with their codes", () => {
    expect(() => judgeForeignBundle(Buffer.alloc(MAX_BUNDLE_BYTES + 1, 0x20), td("c.test"))).toThrow(expect.objectContaining({ code: "federation_bundle_too_large" }));
    expect(() => judgeForeignBundle("<html>", td("c.test"))).toThrow(expect.objectContaining({ code: "federation_bundle_malformed" }));
    expect(() => judgeForeignBundle('{"keys":"x"}', td("c.test"))).toThrow(expect.objectContaining({ code: "federation_bundle_malformed" }));
    expect(() => judgeForeignBundle('{"keys":[{"use":"x509-svid","x5c":["AAAA"]}],"spiffe_sequence":1}', td("c.test"))).toThrow(
      expect.objectContaining({ code: "federation_bundle_malformed" }),
    );
    // An empty key set is the peer revoking everything (Trust Domain and Bundle §4.1.3): accepted.
    expect(judgeForeignBundle('{"keys":[],"spiffe_sequence":9}', td("c.test")).bundle.x509Authorities).toEqual([]);
  });
});
