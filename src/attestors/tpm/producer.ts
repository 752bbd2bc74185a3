import { TPM_ALG } from "../../tpm/constants.js";
import { TpmClient } from "../../tpm/client.js";
import { BINDING_DOMAINS, keyBindingCommitment } from "../binding.js";
import type { EvidenceProducer, JsonObject } from "../types.js";

/** The persistent EKs and their certificates' NV indices, as swtpm_setup writes them. */
const EKS = {
  rsa2048: { handle: 0x81010001, nv: 0x01c00002 },
  "ecc-p384": { handle: 0x81010016, nv: 0x01c00016 },
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
  return {
    type: "tpm",
    async evidence({ nonce, spki }): Promise<JsonObject> {
      client = await TpmClient.open(o.tpm);
      const ekPublic = await client.useEk(ek.handle);
      const ekCert = await client.readNv(ek.nv).catch(() => undefined);
      const created = await client.createAk(ek.handle);
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
      if (!client || ak === undefined) throw new Error("no evidence round before the challenge");
      const secret = await client.activateCredential(ak, ek.handle, Buffer.from(String(challenge.credential_blob), "base64"), Buffer.from(String(challenge.encrypted_secret), "base64"));
      return { secret: secret.toString("base64") };
    },
    async close() {
      if (client && ak !== undefined) await client.flush(ak).catch(() => undefined);
      await client?.close();
    },
  };
}
