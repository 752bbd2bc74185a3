import "reflect-metadata";
import { generateKeyPairSync, sign, verify } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createTpmAttestor } from "../src/attestors/tpm/attestor.js";
import { TrustDomain } from "../src/spiffe/id.js";
import { startSwtpm } from "../test/helpers/swtpm.js";
import { tempDir } from "../test/helpers/tmp.js";
import { tpm2ToolsNode } from "../test/helpers/tpm2-tools-node.js";
import { closedLoop, summary } from "./stats.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);

const loop = (op: () => Promise<unknown>) => closedLoop(op, 1, SECONDS);

/**
 * Server-side cost of one full TPM attestation on one core: EK certificate chain (remembered per
 * intermediate), AK checks, quote signature, nonce binding, PCR digest and policy, MakeCredential
 * to the EK, and checking the activated secret. Evidence comes once from swtpm via tpm2-tools;
 * the baseline is the raw ECDSA P-256 verify rate (the AK's key type) in the same run.
 */
export async function run(): Promise<void> {
  const tpm = await startSwtpm();
  const roots = tempDir("bench-ek-roots");
  try {
    writeFileSync(join(roots.path, "root.pem"), tpm.rootCertPem);
    writeFileSync(join(roots.path, "issuer.pem"), tpm.issuerCertPem);
    const zero = "00".repeat(32);
    const attestor = createTpmAttestor({ ekRootsDir: roots.path, trustedEkHashes: [], pcrPolicy: { sha256: { "0": zero, "7": zero } }, idTemplate: "/hallmark/agent/tpm/{ek_pubhash}" });
    const nonce = Buffer.alloc(32, 9);
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });
    const ctx = { trustDomain: TrustDomain.parse("example.org"), sessionId: "bench", nonce, boundKeySpki: spki, now: new Date() };
    const evidence = await tpm2ToolsNode(tpm).evidence({ nonce, spki });

    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const msg = Buffer.alloc(145, 1);
    const sig = sign("sha256", msg, privateKey);
    const raw = await loop(async () => verify("sha256", msg, publicKey, sig));
    const full = await loop(async () => {
      const step = await attestor.attest(evidence, ctx);
      if (step.kind !== "challenge") throw new Error("expected a challenge");
    });
    console.log("\n== TPM attestation verification (RSA-2048 EK with certificate, ECC P-256 AK), one core");
    console.log(summary("baseline: raw ECDSA P-256 verify (node:crypto)", raw));
    console.log(summary("tpm: EK chain + AK + quote + PCR policy + MakeCredential", full));
    console.log(`tpm attestations / raw verify: ${((full.ops / full.seconds / (raw.ops / raw.seconds)) * 100).toFixed(0)}% (target: >= 2,000 attestations/s)`);
  } finally {
    await tpm.stop();
    roots.remove();
  }
}
