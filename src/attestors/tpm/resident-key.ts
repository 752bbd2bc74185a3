import { createHash } from "node:crypto";
import { bitString, oid, sequence, smallInteger, tlv } from "../../issuer/der.js";
import { rawEcdsaToDer } from "../../issuer/signature-formats.js";
import { derToPem } from "../../pki/pem.js";
import type { TpmClient } from "../../tpm/client.js";
import { tpmError } from "../../tpm/errors.js";
import { spkiOf } from "../../tpm/keys.js";
import { decodeTpm2bPublic, decodeTpmtSignature } from "../../tpm/structures.js";

/**
 * A PKCS#10 CSR for a TPM-resident key, signed inside the TPM (TPM2_Sign over the SHA-256 of the
 * CertificationRequestInfo): the private key never exists outside the chip.
 */
export async function tpmResidentCsr(client: TpmClient, keyHandle: number, keyPublic: Buffer): Promise<{ csrPem: string; spki: Buffer }> {
  const spki = spkiOf(decodeTpm2bPublic(keyPublic));
  const subject = sequence(tlv(0x31, sequence(oid("2.5.4.10"), tlv(0x0c, Buffer.from("Hallmark TPM key", "utf8")))));
  const info = sequence(smallInteger(0), subject, spki, Buffer.from([0xa0, 0x00]));
  const sig = decodeTpmtSignature(await client.sign(keyHandle, createHash("sha256").update(info).digest()));
  if (!sig.ecc) throw tpmError("tpm_unsupported_algorithm", "the TPM key did not return an ECDSA signature");
  const size = 32;
  const pad = (b: Buffer) => Buffer.concat([Buffer.alloc(Math.max(0, size - b.length)), b]);
  const der = rawEcdsaToDer(Buffer.concat([pad(sig.ecc.r), pad(sig.ecc.s)]));
  if (!der) throw tpmError("tpm_unsupported_algorithm", "the TPM returned a malformed ECDSA signature");
  const csr = sequence(info, sequence(oid("1.2.840.10045.4.3.2")), bitString(der));
  return { csrPem: derToPem(csr, "CERTIFICATE REQUEST"), spki };
}
