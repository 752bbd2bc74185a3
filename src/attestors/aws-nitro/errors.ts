import { errorFactory, type ErrorTable } from "../../errors.js";

/** Codes of the AWS Nitro Enclaves attestor. */
export const NITRO_ERRORS = {
  nitro_document_malformed: { status: 400, title: "The Nitro attestation document is malformed" },
  nitro_document_too_large: { status: 413, title: "The Nitro attestation document is too large" },
  nitro_unsupported_algorithm: { status: 400, title: "The COSE algorithm is not ES384" },
  nitro_unsupported_digest: { status: 400, title: "The document digest is not SHA384" },
  nitro_signature_invalid: { status: 403, title: "The COSE signature does not verify" },
  nitro_chain_invalid: { status: 403, title: "The Nitro certificate chain does not verify to the pinned root" },
  nitro_document_stale: { status: 403, title: "The attestation document is too old or from the future" },
  nitro_nonce_mismatch: { status: 403, title: "The document nonce is not the session nonce" },
  nitro_public_key_mismatch: { status: 403, title: "The document public_key is not the key being certified" },
  nitro_debug_enclave: { status: 403, title: "Debug enclaves are refused by policy" },
  nitro_pcr_policy_violation: { status: 403, title: "A PCR does not match the policy" },
  nitro_pcr_missing: { status: 403, title: "A PCR required by the policy is missing" },
} as const satisfies ErrorTable;

export const nitroError = errorFactory(NITRO_ERRORS);
