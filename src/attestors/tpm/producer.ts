import { TPM_ALG } from "../../tpm/constants.js";
import { TpmClient } from "../../tpm/client.js";
import { BINDING_DOMAINS, keyBindingCommitment } from "../binding.js";
import type { EvidenceProducer, JsonObject } from "../types.js";

/**
 * The EKs: swtpm_setup persists an RSA 2048 and an ECC P-384 EK (certificates at NV 0x01c00002 and
 * 0x01c00016); an ECC P-256 EK is created from its TCG template (certificate, if any, at 0x01c0000a).
 */
const EKS = {
  rsa2048: { handle: 0x81010001, nv: 0x01c00002, template: undefined },
  "ecc-p384": { handle: 0x81010016, nv: 0x01c00016, template: undefined },
  "ecc-p256": { handle: undefined, nv: 0x01c0000a, template: "ecc-p256" },
} as const;

/**
 * The node side of TPM attestation with Hallmark's own TPM client (no tpm2-tss): reads the EK and
 * its certificate, creates an AK under the EK, quotes the PCRs with the binding commitment, and
 * activates the server's credential. Everything it loads is flushed on close.
 */
export function createTpmEvidenceProducer(o: { tpm: string; ek?: keyof typeof EKS; pcrs?: number[] }): EvidenceProducer {
  const ek = EKS[o.ek ?? "rsa2048"];
  const selection = [{ hashAlg: TPM_ALG.SHA256, pcrs: o.pcrs ?? [0, 1, 2, 3, 4, 5, 6, 7] }];
  let client: TpmClient | undefined;
  let ak: number | undefined;
  let ekHandle: number | undefined;
  let createdEk = false;
  return {
    type: "tpm",
    async evidence({ nonce, spki }): Promise<JsonObject> {
      client = await TpmClient.open(o.tpm);
      if (ek.template) {
        ekHandle = (await client.createEk(ek.template)).handle;
        createdEk = true;
      } else ekHandle = ek.handle;
      const ekPublic = await client.useEk(ekHandle);
      const ekCert = await client.readNv(ek.nv).catch(() => undefined);
      const created = await client.createAk(ekHandle);
      ak = created.handle;
      const { attest, signature } = await client.quote(ak, keyBindingCommitment("sha256", BINDING_DOMAINS.tpmQuote, nonce, spki), selection);
      const values = await client.pcrRead(selection);
      return {
        ek_public: ekPublic.toString("base64"),
        ...(ekCert ? { ek_cert: ekCert.toString("base64") } : {}),
        ak_public: created.public.toString("base64"),
        quote: attest.toString("base64"),
        quote_signature: signature.toString("base64"),
        pcr_values: values.toString("base64"),
      };
    },
    async answer(challenge: JsonObject): Promise<JsonObject> {
      if (!client || ak === undefined || ekHandle === undefined) throw new Error("no evidence round before the challenge");
      const secret = await client.activateCredential(ak, ekHandle, Buffer.from(String(challenge.credential_blob), "base64"), Buffer.from(String(challenge.encrypted_secret), "base64"));
      return { secret: secret.toString("base64") };
    },
    async close() {
      if (client && ak !== undefined) await client.flush(ak).catch(() => undefined);
      if (client && createdEk && ekHandle !== undefined) await client.flush(ekHandle).catch(() => undefined);
      await client?.close();
    },
  };
}
