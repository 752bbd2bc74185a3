import "reflect-metadata";
import { X509Certificate, createSign, generateKeyPairSync, verify } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { pemBlocks } from "../src/pki/pem.js";
import { checkNitroPolicy } from "../src/attestors/aws-nitro/attestor.js";
import { parseNitroDocument } from "../src/attestors/aws-nitro/document.js";
import { verifyNitroDocument } from "../src/attestors/aws-nitro/verify.js";
import { parseSnpReport } from "../src/attestors/amd-sev-snp/report.js";
import { verifySnpReport } from "../src/attestors/amd-sev-snp/verify.js";
import { serialLoop, summary } from "./stats.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const FIXTURES = fileURLToPath(new URL("../../../shared/fixtures/real/", import.meta.url));

const loop = (op: () => void) => serialLoop(op, SECONDS);

/**
 * Server-side verification cost of one Nitro document and one SEV-SNP report on one core
 * (parse, chain — remembered per intermediate — signature, policy), next to the raw ECDSA P-384
 * verify rate measured in the same run. Uses the real evidence in ../shared/fixtures.
 */
export async function run(): Promise<void> {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-384" });
  const msg = Buffer.alloc(672, 7);
  const sig = createSign("sha384").update(msg).sign(privateKey);
  const raw = loop(() => verify("sha384", msg, publicKey, sig));
  console.log("\n== Attestation verification, one core");
  console.log(summary("baseline: raw ECDSA P-384 verify (node:crypto)", raw));
  const rawRate = raw.ops / raw.seconds;
  if (!existsSync(FIXTURES)) {
    console.log(`(attestor figures skipped: ${FIXTURES} is absent)`);
    return;
  }
  const nitroRoot = pemBlocks(readFileSync(`${FIXTURES}aws-nitro/aws-nitro-enclaves-root-g1.pem`, "utf8"));
  const nitroDoc = readFileSync(`${FIXTURES}aws-nitro/evervault-beta-valid-attestation-doc.bin`);
  const nitro = loop(() => {
    const doc = parseNitroDocument(nitroDoc);
    verifyNitroDocument(doc, { anchors: nitroRoot });
    checkNitroPolicy(doc, { allowDebug: false, pcrs: {} });
  });
  console.log(summary("aws_nitro: parse + chain (remembered) + COSE signature + policy", nitro));
  console.log(`aws_nitro / raw P-384 verify: ${((nitro.ops / nitro.seconds / rawRate) * 100).toFixed(0)}% (target >= 33%)`);

  const report = readFileSync(`${FIXTURES}amd-sev-snp/milan-v2-report.bin`);
  const vcek = readFileSync(`${FIXTURES}amd-sev-snp/milan-v2-vcek.der`);
  const chain = pemBlocks(readFileSync(`${FIXTURES}amd-sev-snp/cert_chain-vcek-Milan.pem`, "utf8"));
  const at = new Date(new Date(new X509Certificate(vcek).validFrom).getTime() + 86400_000);
  const snp = loop(() => {
    verifySnpReport(parseSnpReport(report), { signingCert: vcek, chain, anchors: [chain[1]!], at });
  });
  console.log(summary("amd_sev_snp: parse + chain (remembered) + VCEK checks + signature", snp));
  console.log(`amd_sev_snp / raw P-384 verify: ${((snp.ops / snp.seconds / rawRate) * 100).toFixed(0)}% (target >= 33%)`);
}
