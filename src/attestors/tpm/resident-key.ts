import { createHash } from "node:crypto";
import { bitString, oid, sequence, smallInteger, tlv } from "../../issuer/der.js";
import { rawEcdsaToDer } from "../../issuer/signature-formats.js";
import { derToPem } from "../../pki/pem.js";
import { EK_TEMPLATES, TpmClient } from "../../tpm/client.js";
import { tpmError } from "../../tpm/errors.js";
import { spkiOf } from "../../tpm/keys.js";
import { decodeTpm2bPublic, decodeTpmtSignature } from "../../tpm/structures.js";
import { tpmAttestorError } from "./errors.js";

/**
 * A PKCS#10 CSR for a TPM-resident key, signed inside the TPM (TPM2_Sign over the SHA-256 of the
 * CertificationRequestInfo): the private key never exists outside the chip.
 */
export async function tpmResidentCsr(client: TpmClient, keyHandle: number, keyPublic: Buffer): Promise<{ csrPem: string; spki: Buffer }> {
  const spki = spkiOf(decodeTpm2bPublic(keyPublic));
  const subject = sequence(tlv(0x31, sequence(oid("2.5.4.10"), tlv(0x0c, Buffer.from("Hallmark TPM key", "utf8")))));
  const info = sequence(smallInteger(0), subject, spki, Buffer.from([0xa0, 0x00]));
  const der = await signSha256(client, keyHandle, info);
  const csr = sequence(info, sequence(oid("1.2.840.10045.4.3.2")), bitString(der));
  return { csrPem: derToPem(csr, "CERTIFICATE REQUEST"), spki };
}

/** ECDSA P-256 with SHA-256 of `message` by a loaded TPM key: the DER signature X.509 and Node's crypto.verify take. */
async function signSha256(client: TpmClient, keyHandle: number, message: Buffer): Promise<Buffer> {
  const sig = decodeTpmtSignature(await client.sign(keyHandle, createHash("sha256").update(message).digest()));
  if (!sig.ecc) throw tpmError("tpm_unsupported_algorithm", "the TPM key did not return an ECDSA signature");
  const size = 32;
  const pad = (b: Buffer) => Buffer.concat([Buffer.alloc(Math.max(0, size - b.length)), b]);
  const der = rawEcdsaToDer(Buffer.concat([pad(sig.ecc.r), pad(sig.ecc.s)]));
  if (!der) throw tpmError("tpm_unsupported_algorithm", "the TPM returned a malformed ECDSA signature");
  return der;
}

/** svid.tpmkey, as the producer writes it: the key's parent EK and its TPM2B_PUBLIC and (EK-wrapped) TPM2B_PRIVATE. */
interface TpmKeyFile {
  parent: string;
  public: string;
  private: string;
}

/**
 * A signer with the TPM-resident SVID key of `keyFile` (svid.tpmkey): each call opens the TPM,
 * loads the key under its EK, signs the SHA-256 of the message (ECDSA P-256, DER), and flushes
 * and closes again, so the agent holds no TPM connection between signatures (swtpm serves one
 * client at a time, and the next attestation needs it). Calls run one at a time. The private key
 * is never outside the TPM: the file holds only the blob the EK wrapped.
 */
export function tpmResidentSigner(tpm: string, keyFile: string): (message: Buffer) => Promise<Buffer> {
  const key = parseKeyFile(keyFile);
  let queue: Promise<unknown> = Promise.resolve();
  const signOnce = async (message: Buffer): Promise<Buffer> => {
    const client = await TpmClient.open(tpm);
    const loaded: number[] = [];
    try {
      const ek = key.parent.startsWith("template:") ? (await client.createEk(key.parent.slice(9) as keyof typeof EK_TEMPLATES)).handle : Number(key.parent);
      if (key.parent.startsWith("template:")) loaded.push(ek);
      await client.useEk(ek);
      const handle = await client.loadUnderEk(ek, Buffer.from(key.public, "base64"), Buffer.from(key.private, "base64"));
      loaded.push(handle);
      return await signSha256(client, handle, message);
    } finally {
      for (const h of loaded.reverse()) await client.flush(h).catch(() => undefined);
      await client.close();
    }
  };
  return (message) => {
    const run = queue.then(() => signOnce(message));
    queue = run.catch(() => undefined);
    return run;
  };
}

function parseKeyFile(text: string): TpmKeyFile {
  let v: Partial<TpmKeyFile>;
  try {
    v = JSON.parse(text) as Partial<TpmKeyFile>;
  } catch {
    throw tpmAttestorError("tpm_key_file_unreadable", "svid.tpmkey is not JSON");
  }
  const b64 = (s: unknown) => typeof s === "string" && /^[A-Za-z0-9+/]+={0,2}$/.test(s);
  const parentOk = typeof v.parent === "string" && (/^0x81[0-9a-f]{6}$/i.test(v.parent) || Object.keys(EK_TEMPLATES).some((t) => v.parent === `template:${t}`));
  if (!parentOk || !b64(v.public) || !b64(v.private)) {
    throw tpmAttestorError("tpm_key_file_unreadable", "svid.tpmkey must name its parent EK (0x81xxxxxx or template:NAME) and carry base64 public and private blobs");
  }
  return v as TpmKeyFile;
}
