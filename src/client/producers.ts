import type { EvidenceProducer } from "../attestors/types.js";
import { joinTokenProducer } from "./attest.js";

/** Options of `hallmark attest` that choose and configure an evidence producer. */
export interface ProducerOptions {
  attestor: string;
  joinToken?: string | undefined;
  tpm?: string | undefined;
  tpmEk?: string | undefined;
  tpmKeyResident?: boolean | undefined;
  /** Evidence made beforehand (--evidence-file), read by the caller. */
  evidence?: Buffer | undefined;
  evidenceCmd?: string | undefined;
  vcek?: Buffer | undefined;
}

/**
 * One table: attestor type → how the client side gathers its evidence. Each producer is imported
 * when chosen: every `hallmark` command loads this table, and the TPM code alone doubles the
 * CLI's start-up time.
 */
const PRODUCERS: Record<string, (o: ProducerOptions) => Promise<EvidenceProducer>> = {
  join_token: async (o) => {
    if (!o.joinToken) throw new Error("--join-token is required for the join_token attestor");
    return joinTokenProducer(o.joinToken);
  },
  aws_nitro: async (o) => (await import("../attestors/aws-nitro/producer.js")).createNitroEvidenceProducer({ document: o.evidence, evidenceCmd: o.evidenceCmd }),
  tpm: async (o) => {
    if (!o.tpm) throw new Error("--tpm is required for the tpm attestor (swtpm:host=H,port=P or /dev/tpmrm0)");
    const ek = o.tpmEk ?? "rsa2048";
    if (ek !== "rsa2048" && ek !== "ecc-p256" && ek !== "ecc-p384") throw new Error("--tpm-ek must be rsa2048, ecc-p256 or ecc-p384");
    return (await import("../attestors/tpm/producer.js")).createTpmEvidenceProducer({ tpm: o.tpm, ek, keyResident: o.tpmKeyResident });
  },
  amd_sev_snp: async (o) => (await import("../attestors/amd-sev-snp/producer.js")).createSnpEvidenceProducer({ report: o.evidence, evidenceCmd: o.evidenceCmd, vcek: o.vcek }),
};

export const PRODUCER_TYPES = (): string[] => Object.keys(PRODUCERS);

export async function createProducer(o: ProducerOptions): Promise<EvidenceProducer> {
  const make = PRODUCERS[o.attestor];
  if (!make) throw new Error(`unknown attestor '${o.attestor}' (one of: ${PRODUCER_TYPES().join(", ")})`);
  return make(o);
}
