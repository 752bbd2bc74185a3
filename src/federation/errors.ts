import { errorFactory, type ErrorTable } from "../errors.js";

/**
 * Codes of SPIFFE federation (issue 14): relationships with foreign trust domains and the
 * bundles fetched from their bundle endpoints. Every refused refresh is audited under one of these
 * codes and leaves the last good bundle in place. Statuses stay below 500 so the operator who
 * forces a refresh reads the reason (a 5xx detail is never shown).
 */
export const FEDERATION_ERRORS = {
  // administration
  federation_not_found: { status: 404, title: "No federation relationship with this trust domain" },
  federation_exists: { status: 409, title: "A federation relationship with this trust domain exists already" },
  federation_invalid: { status: 400, title: "The federation relationship's parameters are invalid" },
  federation_own_trust_domain: { status: 400, title: "A server does not federate with its own trust domain" },
  // fetching the foreign bundle (SPIFFE Federation §5.2)
  federation_fetch_failed: { status: 424, title: "The bundle endpoint could not be reached or did not answer 200" },
  federation_redirect_refused: { status: 424, title: "The bundle endpoint answered with a redirect, which Hallmark does not follow" },
  federation_endpoint_untrusted: { status: 424, title: "The bundle endpoint's certificate does not chain to the roots this relationship trusts" },
  federation_endpoint_id_mismatch: { status: 424, title: "The bundle endpoint's X509-SVID does not carry the configured endpoint SPIFFE ID" },
  federation_endpoint_bundle_missing: { status: 424, title: "No bundle is known yet for the endpoint's trust domain (https_spiffe needs one)" },
  // judging the fetched bundle
  federation_bundle_too_large: { status: 422, title: "The fetched bundle is larger than a SPIFFE bundle may be here" },
  federation_bundle_malformed: { status: 422, title: "The fetched document is not a usable SPIFFE bundle" },
  federation_wrong_trust_domain: { status: 422, title: "The fetched bundle's authorities belong to another trust domain" },
  federation_sequence_regressed: { status: 422, title: "The fetched bundle's spiffe_sequence goes backwards, or repeats with other keys" },
} as const satisfies ErrorTable;

export const federationError = errorFactory(FEDERATION_ERRORS);
