import { errorFactory, type ErrorTable } from "../../errors.js";

/** Codes of the TPM node attestor. */
export const TPM_ATTESTOR_ERRORS = {
  tpm_ek_untrusted: { status: 403, title: "The EK certificate does not chain to a configured manufacturer root" },
  tpm_ek_missing_certificate: { status: 403, title: "The EK has no certificate and is not in the allow-list" },
  tpm_ek_mismatch: { status: 403, title: "The EK certificate's key is not the EK public key" },
  tpm_ek_attributes: { status: 403, title: "The EK is not a restricted decryption key bound to its TPM" },
  tpm_ak_not_restricted: { status: 403, title: "The AK is not a restricted signing key" },
  tpm_ak_attributes: { status: 403, title: "The AK lacks fixedTPM, fixedParent or sensitiveDataOrigin" },
  tpm_quote_wrong_type: { status: 400, title: "The attestation is not a quote" },
  tpm_quote_signature_invalid: { status: 403, title: "The quote signature does not verify with the AK" },
  tpm_quote_nonce_mismatch: { status: 403, title: "The quote's extraData does not commit to the nonce and key" },
  tpm_pcr_digest_mismatch: { status: 403, title: "The quote's PCR digest is not the digest of the reported PCR values" },
  tpm_pcr_values_malformed: { status: 400, title: "The reported PCR values do not match the quote's selection" },
  tpm_pcr_missing: { status: 403, title: "A PCR required by policy is not quoted" },
  tpm_pcr_policy_violation: { status: 403, title: "A PCR does not match policy" },
  tpm_key_not_resident: { status: 403, title: "The certified key is not fixed to the TPM" },
  tpm_certify_invalid: { status: 403, title: "The TPM2_Certify of the SVID key does not verify" },
  tpm_certify_key_mismatch: { status: 403, title: "The certified key is not the CSR's key" },
  tpm_activation_failed: { status: 403, title: "Credential activation was answered wrongly" },
  // node side: the stored handle of a TPM-resident SVID key (svid.tpmkey)
  tpm_key_file_unreadable: { status: 400, title: "The TPM key file (svid.tpmkey) is malformed" },
} as const satisfies ErrorTable;

export const tpmAttestorError = errorFactory(TPM_ATTESTOR_ERRORS);
