import { describe, expect, it } from "vitest";
import { CborTagged, decodeCbor } from "../../../src/cbor/decode.js";
import { encodeCbor } from "../../../src/cbor/encode.js";
import { checkNitroPolicy } from "../../../src/attestors/aws-nitro/attestor.js";
import { parseNitroDocument } from "../../../src/attestors/aws-nitro/document.js";
import { verifyNitroDocument } from "../../../src/attestors/aws-nitro/verify.js";
import { pemBlocks } from "../../../src/pki/pem.js";
import { haveSharedFixtures, sharedFixture, warnIfNoSharedFixtures } from "../../helpers/fixtures.js";

const DOCS = [
  ["anjuna-attester-sample_attestation_doc_full.bin", "2024-01-24T18:14:25.635Z", true],
  ["anjuna-attester-sample_prod_doc.bin", "2023-09-21T23:09:57.673Z", false],
  ["evervault-beta-valid-attestation-doc.bin", "2022-10-13T08:58:02.136Z", false],
] as const;

const anchors = () => pemBlocks(sharedFixture("aws-nitro/aws-nitro-enclaves-root-g1.pem").toString());

/** Every outcome of verifying `bytes` as a document: "ok" or the HallmarkError code; anything else fails the test. */
function outcome(bytes: Uint8Array): string {
  try {
    verifyNitroDocument(parseNitroDocument(bytes), { anchors: anchors() });
    return "ok";
  } catch (e) {
    const c = (e as { code?: string; name?: string }).code;
    if ((e as { name?: string }).name !== "HallmarkError" || !c) throw e;
    return c;
  }
}

describe("real AWS Nitro attestation documents", () => {
  warnIfNoSharedFixtures("real Nitro documents");

  it.skipIf(!haveSharedFixtures).each(DOCS)("%s verifies at its own timestamp with the pinned root", (file, ts, debug) => {
    const doc = parseNitroDocument(sharedFixture(`aws-nitro/${file}`));
    expect(doc.timestamp.toISOString()).toBe(ts);
    expect(verifyNitroDocument(doc, { anchors: anchors() }).rootFingerprint).toBe("641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b");
    if (debug) {
      expect(() => checkNitroPolicy(doc, { allowDebug: false, pcrs: {} })).toThrowError(expect.objectContaining({ code: "nitro_debug_enclave" }));
      expect(checkNitroPolicy(doc, { allowDebug: true, pcrs: {} })).toBe(true);
    } else {
      expect(checkNitroPolicy(doc, { allowDebug: false, pcrs: { "0": doc.pcrs.get(0)!.toString("hex") } })).toBe(false);
      expect(() => checkNitroPolicy(doc, { allowDebug: false, pcrs: { "0": "00".repeat(48) } })).toThrowError(expect.objectContaining({ code: "nitro_pcr_policy_violation" }));
    }
  });

  it.skipIf(!haveSharedFixtures)("accepts a tagged (CBOR tag 18) copy of a real document", () => {
    const raw = sharedFixture(`aws-nitro/${DOCS[1][0]}`);
    const tagged = encodeCbor(new CborTagged(18, decodeCbor(raw)));
    expect(outcome(tagged)).toBe("ok");
  });

  it.skipIf(!haveSharedFixtures)("refuses every single-bit flip of the document: signature, framing, payload and the embedded certificates", { timeout: 300_000 }, () => {
    const raw = sharedFixture(`aws-nitro/${DOCS[2][0]}`);
    const flipped = (byte: number, bit: number) => {
      const b = Buffer.from(raw);
      b.writeUInt8(b.readUInt8(byte) ^ (1 << bit), byte);
      return outcome(b);
    };
    // All ~37,000 bits: the 768 of the signature, the COSE framing and protected header, and every
    // payload field including the certificates (each flipped certificate is parsed afresh, ~1 ms).
    const codes = new Set<string>();
    for (let i = 0; i < raw.length; i++) for (let bit = 0; bit < 8; bit++) codes.add(flipped(i, bit));
    expect(codes.has("ok")).toBe(false);
    expect(codes.has("nitro_signature_invalid")).toBe(true);
    expect(codes.has("nitro_document_malformed")).toBe(true);
  });

  it.skipIf(!haveSharedFixtures)("refuses every truncation and an oversized document", () => {
    const raw = sharedFixture(`aws-nitro/${DOCS[0][0]}`);
    for (let n = 0; n < raw.length; n += 13) expect(outcome(raw.subarray(0, n))).not.toBe("ok");
    expect(outcome(Buffer.concat([raw, Buffer.from([0])]))).toBe("nitro_document_malformed");
    expect(outcome(Buffer.alloc(40 * 1024))).toBe("nitro_document_too_large");
  });

  it.skipIf(!haveSharedFixtures)("refuses the real documents after their chain expired", () => {
    const doc = parseNitroDocument(sharedFixture(`aws-nitro/${DOCS[2][0]}`));
    const late = { ...doc, timestamp: new Date(doc.timestamp.getTime() + 30 * 86400_000) };
    expect(() => verifyNitroDocument(late, { anchors: anchors() })).toThrowError(expect.objectContaining({ code: "pki_cert_expired" }));
  });
});
