import { errorFactory, type ErrorTable } from "../../errors.js";

/** Codes of the AMD SEV-SNP attestor. */
export const SNP_ERRORS = {
  snp_report_malformed: { status: 400, title: "The SEV-SNP attestation report is malformed" },
  snp_report_size: { status: 400, title: "The SEV-SNP report is not 1184 bytes" },
  snp_unknown_version: { status: 400, title: "The SEV-SNP report version is not supported" },
  snp_reserved_nonzero: { status: 400, title: "Reserved bytes of the SEV-SNP report are not zero" },
  snp_unsupported_signature_algorithm: { status: 400, title: "The report's signature algorithm is not ECDSA P-384 SHA-384" },
  snp_signature_invalid: { status: 403, title: "The report signature does not verify with the VCEK/VLEK" },
  snp_vcek_missing: { status: 400, title: "No VCEK or VLEK certificate was given or cached for this report" },
  snp_signer_mismatch: { status: 403, title: "The signing certificate is not the kind the report names (VCEK vs VLEK)" },
  snp_product_mismatch: { status: 403, title: "The certificate chain is for another product than the report" },
  snp_tcb_mismatch: { status: 403, title: "The VCEK's TCB does not equal the report's reported TCB" },
  snp_chip_id_mismatch: { status: 403, title: "The VCEK's hardware ID does not equal the report's chip ID" },
  snp_report_data_mismatch: { status: 403, title: "report_data does not commit to the session nonce and key" },
  snp_measurement_not_allowed: { status: 403, title: "The launch measurement is not allowed by policy" },
  snp_host_data_not_allowed: { status: 403, title: "host_data is not allowed by policy" },
  snp_tcb_too_old: { status: 403, title: "A TCB component is below the policy minimum" },
  snp_debug_not_allowed: { status: 403, title: "The guest policy allows debugging" },
  snp_migrate_ma_not_allowed: { status: 403, title: "The guest policy allows a migration agent" },
  snp_vmpl_not_allowed: { status: 403, title: "The report's VMPL is not allowed" },
  snp_guest_svn_too_old: { status: 403, title: "The guest SVN is below the policy minimum" },
  snp_id_key_not_allowed: { status: 403, title: "The ID key digest is not allowed" },
  snp_author_key_not_allowed: { status: 403, title: "The author key digest is not allowed" },
} as const satisfies ErrorTable;

export const snpError = errorFactory(SNP_ERRORS);
