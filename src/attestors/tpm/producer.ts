import { TPM_ALG } from "../../tpm/constants.js";
import { TpmClient } from "../../tpm/client.js";
import { BINDING_DOMAINS, keyBindingCommitment } from "../binding.js";
import type { EvidenceProducer, JsonObject } from "../types.js";
import { tpmResidentCsr } from "./resident-key.js";

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
 * activates the server's credential. With `keyResident`, the SVID key is a TPM key under the EK,
 * its CSR is signed in the TPM and the AK certifies it (TPM2_Certify); `svid.tpmkey` then holds
 * the key's public and (TPM-wrapped) private blobs instead of svid.key. Everything loaded is
 * flushed on close.
 */
export function createTpmEvidenceProducer(o: { tpm: string; ek?: keyof typeof EKS; pcrs?: number[]; keyResident?: boolean }): EvidenceProducer {
  const ek = EKS[o.ek ?? "rsa2048"];
  const selection = [{ hashAlg: TPM_ALG.SHA256, pcrs: o.pcrs ?? [0, 1, 2, 3, 4, 5, 6, 7] }];
  let client: TpmClient | undefined;
  let ekHandle: number | undefined;
  let createdEk = false;
  let ekPublic: Buffer | undefined;
  const loaded: number[] = [];
  let svidKey: { handle: number; public: Buffer } | undefined;
  let ak: number | undefined;

  const open = async (): Promise<TpmClient> => {
    if (client) return client;
    client = await TpmClient.open(o.tpm);
    if (ek.template) {
      ekHandle = (await client.createEk(ek.template)).handle;
      createdEk = true;
    } else ekHandle = ek.handle;
    ekPublic = await client.useEk(ekHandle);
    return client;
  };

  const producer: EvidenceProducer = {
    type: "tpm",
    async evidence({ nonce, spki }): Promise<JsonObject> {
      const c = await open();
      const ekCert = await c.readNv(ek.nv).catch(() => undefined);
      // A second round with the same producer replaces its AK: TPMs hold few transient objects.
      if (ak !== undefined) {
        await c.flush(ak).catch(() => undefined);
        loaded.splice(loaded.indexOf(ak), 1);
      }
      const created = await c.createAk(ekHandle!);
      ak = created.handle;
      loaded.push(ak);
      const commitment = keyBindingCommitment("sha256", BINDING_DOMAINS.tpmQuote, nonce, spki);
      const { attest, signature } = await c.quote(ak, commitment, selection);
      const values = await c.pcrRead(selection);
      const certify = svidKey ? await c.certify(svidKey.handle, ak, commitment) : undefined;
      return {
        ek_public: ekPublic!.toString("base64"),
        ...(ekCert ? { ek_cert: ekCert.toString("base64") } : {}),
        ak_public: created.public.toString("base64"),
        quote: attest.toString("base64"),
        quote_signature: signature.toString("base64"),
        pcr_values: values.toString("base64"),
        ...(certify && svidKey
          ? { certify: { public: svidKey.public.toString("base64"), attest: certify.attest.toString("base64"), signature: certify.signature.toString("base64") } }
          : {}),
      };
    },
    async answer(challenge: JsonObject): Promise<JsonObject> {
      if (!client || ak === undefined || ekHandle === undefined) throw new Error("no evidence round before the challenge");
      const secret = await client.activateCredential(ak, ekHandle, Buffer.from(String(challenge.credential_blob), "base64"), Buffer.from(String(challenge.encrypted_secret), "base64"));
      return { secret: secret.toString("base64") };
    },
    async close() {
      for (const h of loaded) await client?.flush(h).catch(() => undefined);
      if (client && createdEk && ekHandle !== undefined) await client.flush(ekHandle).catch(() => undefined);
      await client?.close();
    },
  };
  if (o.keyResident) {
    producer.key = async () => {
      const c = await open();
      const k = await c.createSigningKey(ekHandle!);
      loaded.push(k.handle);
      svidKey = k;
      const { csrPem, spki } = await tpmResidentCsr(c, k.handle, k.public);
      const blob = { parent: ek.template ? `template:${ek.template}` : `0x${ek.handle.toString(16)}`, public: k.public.toString("base64"), private: k.private.toString("base64") };
      return { csrPem, spki, keyFiles: { "svid.tpmkey": `${JSON.stringify(blob, null, 2)}\n` } };
    };
  }
  return producer;
}
