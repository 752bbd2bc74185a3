import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { attest } from "../../../src/client/attest.js";
import { adminRequest, expectOk } from "../../../src/client/http.js";
import type { EvidenceProducer } from "../../../src/attestors/types.js";
import { type DocFields, fakeNitroPki, pcrSet, signNitroDocument } from "../../helpers/nitro.js";
import { startTestServer, type TestServer } from "../../helpers/server.js";
import { testCert } from "../../helpers/test-pki.js";
import { tempDir } from "../../helpers/tmp.js";

let server: TestServer;
let pki: Awaited<ReturnType<typeof fakeNitroPki>>;
let bundlePem: string;
const files = tempDir("nitro-roots");
const PCRS = { 0: "a0".repeat(48), 1: "a1".repeat(48), 2: "a2".repeat(48), 3: "a3".repeat(48), 4: "a4".repeat(48), 8: "a8".repeat(48) };

beforeAll(async () => {
  pki = await fakeNitroPki();
  const rootFile = join(files.path, "fake-root.pem");
  writeFileSync(rootFile, pki.root.cert.toString("pem"));
  server = await startTestServer({
    overrides: {
      attestors: {
        aws_nitro: {
          rootFiles: [rootFile],
          maxDocumentAge: "5m",
          pcrs: { "0": PCRS[0], "1": [PCRS[1], "ff".repeat(48)], "2": PCRS[2], "3": PCRS[3], "4": PCRS[4], "8": PCRS[8] },
        },
      },
    },
  });
  bundlePem = (expectOk(await adminRequest(server.adminSocket, "GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
});
afterAll(async () => {
  await server?.destroy();
  files.remove();
});

/** An enclave that signs a document for the session's nonce and key, with `tamper` applied. */
function enclave(tamper: (binding: { nonce: Uint8Array; spki: Uint8Array }) => Promise<{ fields: DocFields; signer?: typeof pki }> | { fields: DocFields; signer?: typeof pki }): EvidenceProducer {
  return {
    type: "aws_nitro",
    async evidence(binding) {
      const { fields, signer } = await tamper(binding);
      return { document: (await signNitroDocument(signer ?? pki, fields)).toString("base64") };
    },
  };
}

const honest = ({ nonce, spki }: { nonce: Uint8Array; spki: Uint8Array }) => ({ fields: { nonce, publicKey: spki, pcrs: pcrSet(PCRS) } });

async function refusal(producer: EvidenceProducer): Promise<string> {
  try {
    await attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer });
    return "issued";
  } catch (e) {
    return (e as { code: string }).code;
  }
}

describe("aws_nitro attestation through the server", () => {
  it("issues an SVID whose selectors reflect the measurements, for a fresh nonce bound to the CSR key", async () => {
    const svid = await attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer: enclave(honest) });
    expect(svid.spiffeId).toBe(`spiffe://example.org/hallmark/agent/aws_nitro/${PCRS[0].slice(0, 16)}`);
    expect(svid.selectors).toContain(`aws_nitro:pcr0:${PCRS[0]}`);
    expect(svid.selectors).toContain(`aws_nitro:pcr8:${PCRS[8]}`);
    expect(svid.selectors).toContain("aws_nitro:debug:false");
    expect(svid.selectors.some((s) => s.startsWith("aws_nitro:module_id:i-"))).toBe(true);
    expect(new X509Certificate(svid.certChainPem).subjectAltName).toBe(`URI:${svid.spiffeId}`);
    // A second enclave of the same image attests again (enclaves are ephemeral).
    const again = await attest({ server: server.url, tls: { trustBundlePem: bundlePem }, producer: enclave(honest) });
    expect(again.spiffeId).toBe(svid.spiffeId);
  });

  it("accepts a tagged COSE_Sign1 document", async () => {
    expect(await refusal(enclave((b) => ({ fields: { ...honest(b).fields, tagged: true } })))).toBe("issued");
  });

  it.each<[string, (b: { nonce: Uint8Array; spki: Uint8Array }) => { fields: DocFields }]>([
    ["nitro_nonce_mismatch", (b) => ({ fields: { ...honest(b).fields, nonce: Buffer.alloc(32, 7) } })],
    ["nitro_nonce_mismatch", (b) => ({ fields: { ...honest(b).fields, nonce: null } })],
    ["nitro_public_key_mismatch", (b) => ({ fields: { ...honest(b).fields, publicKey: Buffer.from(b.spki).subarray(1) } })],
    ["nitro_public_key_mismatch", (b) => ({ fields: { ...honest(b).fields, publicKey: null } })],
    ["nitro_document_stale", (b) => ({ fields: { ...honest(b).fields, timestamp: Date.now() - 10 * 60_000 } })],
    ["nitro_document_stale", (b) => ({ fields: { ...honest(b).fields, timestamp: Date.now() + 10 * 60_000 } })],
    ["nitro_unsupported_digest", (b) => ({ fields: { ...honest(b).fields, digest: "SHA256" } })],
    ["nitro_unsupported_algorithm", (b) => ({ fields: { ...honest(b).fields, alg: -7 } })],
    ["nitro_debug_enclave", (b) => ({ fields: { ...honest(b).fields, pcrs: pcrSet({ 3: PCRS[3], 4: PCRS[4], 8: PCRS[8] }) } })],
  ])("refuses with %s", async (code, tamper) => {
    expect(await refusal(enclave(tamper))).toBe(code);
  });

  it.each([0, 1, 2, 3, 4, 8])("refuses a document whose PCR%i breaks the policy", async (pcr) => {
    const code = await refusal(enclave((b) => ({ fields: { ...honest(b).fields, pcrs: pcrSet({ ...PCRS, [pcr]: "ee".repeat(48) }) } })));
    expect(code).toBe("nitro_pcr_policy_violation");
  });

  it("accepts one of a set of allowed values", async () => {
    expect(await refusal(enclave((b) => ({ fields: { ...honest(b).fields, pcrs: pcrSet({ ...PCRS, 1: "ff".repeat(48) }) } })))).toBe("issued");
  });

  it("refuses a missing policy PCR", async () => {
    const pcrs = pcrSet(PCRS);
    pcrs.delete(8);
    expect(await refusal(enclave((b) => ({ fields: { ...honest(b).fields, pcrs } })))).toBe("nitro_pcr_missing");
  });

  it("refuses a chain to another root and a leaf expired at the document's time", async () => {
    const other = await fakeNitroPki();
    expect(await refusal(enclave((b) => ({ fields: honest(b).fields, signer: other })))).toBe("pki_signature_invalid");
    const expiredLeaf = await testCert({ name: "fake enclave", issuer: pki.inter, notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) });
    expect(await refusal(enclave((b) => ({ fields: honest(b).fields, signer: { ...pki, leaf: expiredLeaf } })))).toBe("pki_cert_expired");
  });

  it("refuses malformed evidence and bit flips in the signed document", async () => {
    const flip: EvidenceProducer = {
      type: "aws_nitro",
      async evidence(b) {
        const doc = await signNitroDocument(pki, honest(b).fields);
        doc.writeUInt8(doc.readUInt8(doc.length - 10) ^ 0x04, doc.length - 10);
        return { document: doc.toString("base64") };
      },
    };
    expect(await refusal(flip)).toBe("nitro_signature_invalid");
    expect(await refusal({ type: "aws_nitro", evidence: async () => ({ document: Buffer.from("garbage").toString("base64") }) })).toBe("nitro_document_malformed");
    expect(await refusal({ type: "aws_nitro", evidence: async () => ({ doc: "x" }) })).toBe("invalid_evidence");
  });
});
