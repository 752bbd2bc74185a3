import { describe, expect, it } from "vitest";
import * as x509 from "@peculiar/x509";
import { X509Certificate, createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { AMD_ARK_SHA256, SHIPPED_CHAINS, createSnpAttestor, snpAttestorConfigSchema } from "../../../src/attestors/amd-sev-snp/attestor.js";
import type { Product } from "../../../src/attestors/amd-sev-snp/report.js";
import { validateChain } from "../../../src/pki/chain.js";
import { pemBlocks } from "../../../src/pki/pem.js";
import { TrustDomain } from "../../../src/spiffe/id.js";
import { fakeAmd, signReport } from "../../helpers/snp.js";
import { type TestCa, ecKeys } from "../../helpers/test-pki.js";

const PRODUCTS: Product[] = ["Milan", "Genoa", "Turin"];
const fileOf = (kind: "ask" | "asvk", p: Product) => {
  const f = SHIPPED_CHAINS.find((c) => basename(c) === `${kind}-ark-${p}.pem`);
  if (!f) throw new Error(`${kind}-ark-${p}.pem is not shipped`);
  return pemBlocks(readFileSync(f, "utf8"));
};
const cn = (der: Buffer) => /CN=([^\n]*)/.exec(new X509Certificate(der).subject)?.[1];
const sha256 = (der: Buffer) => createHash("sha256").update(der).digest("hex");

describe("AMD chains shipped in fixtures/amd", () => {
  it.each(PRODUCTS)("%s: the ASK and the ASVK are signed by the pinned ARK of their product line, and by no other", (p) => {
    for (const [kind, name] of [["ask", `SEV-${p}`], ["asvk", `SEV-VLEK-${p}`]] as const) {
      const [intermediate, ark, ...rest] = fileOf(kind, p);
      expect(rest, `${kind}-ark-${p}.pem holds the intermediate, then the ARK`).toEqual([]);
      expect(cn(intermediate!)).toBe(name);
      expect(sha256(ark!)).toBe(AMD_ARK_SHA256[p]);
      const chain = validateChain({ leaf: intermediate!, intermediates: [], anchors: [ark!], at: new Date("2030-01-01") });
      expect(chain.anchorFingerprint).toBe(AMD_ARK_SHA256[p]);
      for (const other of PRODUCTS.filter((o) => o !== p)) {
        expect(new X509Certificate(intermediate!).verify(new X509Certificate(fileOf("ask", other)[1]!).publicKey), `${name} under ARK-${other}`).toBe(false);
      }
    }
  });
});

/**
 * A VLEK that names AMD's real ASVK as its issuer but is signed by a key of ours: nobody outside
 * AMD can mint a genuine VLEK, so reaching `pki_signature_invalid` is the proof that the default
 * configuration found the ASVK for that product line (without it the chain stops at
 * `pki_chain_untrusted`: no issuer of that name).
 */
async function vlekUnderRealAsvk(asvkOf: Product, product: Product) {
  const asvk = fileOf("asvk", asvkOf)[0]!;
  const impostor: TestCa = { cert: new x509.X509Certificate(asvk), der: asvk, keys: await ecKeys("P-384"), curve: "P-384" };
  return fakeAmd({ product, kind: "VLEK", ask: impostor });
}

async function outcome(amd: Awaited<ReturnType<typeof fakeAmd>>, chainPem?: string): Promise<string> {
  const attestor = createSnpAttestor(snpAttestorConfigSchema.parse({}));
  const report = await signReport(amd, {});
  const ctx = { trustDomain: TrustDomain.parse("example.org"), sessionId: "s", nonce: Buffer.alloc(32), boundKeySpki: Buffer.alloc(0), now: new Date() };
  try {
    await attestor.attest({ report: report.toString("base64"), vcek: amd.signer.der.toString("base64"), ...(chainPem ? { cert_chain: chainPem } : {}) }, ctx);
    return "attested";
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}

describe("VLEK-signed reports with the default configuration", () => {
  it.each(PRODUCTS)("%s: a VLEK's chain reaches the shipped ASVK and is checked against its key", async (p) => {
    expect(await outcome(await vlekUnderRealAsvk(p, p))).toBe("pki_signature_invalid");
    // The contrast: an ASVK the configuration does not hold ends the chain before any signature.
    expect(await outcome(await fakeAmd({ product: p, kind: "VLEK" }))).toBe("pki_chain_untrusted");
  });

  it("refuses a VLEK issued under another product line's ASVK, and a chain that brings the wrong ASVK", async () => {
    expect(await outcome(await vlekUnderRealAsvk("Milan", "Genoa"))).toBe("snp_product_mismatch");
    expect(await outcome(await vlekUnderRealAsvk("Genoa", "Turin"))).toBe("snp_product_mismatch");
    expect(await outcome(await vlekUnderRealAsvk("Turin", "Milan"))).toBe("snp_product_mismatch");
    // A Genoa VLEK sent with Milan's ASVK and ARK as its cert_chain: no certificate there issued it.
    const milanChain = readFileSync(SHIPPED_CHAINS.find((c) => basename(c) === "asvk-ark-Milan.pem")!, "utf8");
    expect(await outcome(await vlekUnderRealAsvk("Genoa", "Genoa"), milanChain)).toBe("pki_chain_untrusted");
  });
});
