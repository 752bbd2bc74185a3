import { X509Certificate } from "node:crypto";
import { isHallmarkError } from "../errors.js";
import { MAX_BUNDLE_BYTES, type SpiffeBundle, parseSpiffeBundle } from "../issuer/bundle.js";
import { type TrustDomain, trustDomainOfUri } from "../spiffe/id.js";
import { federationError } from "./errors.js";

/** A foreign bundle that passed every check, with the JSON text that is stored and handed out. */
export interface JudgedBundle {
  json: string;
  bundle: SpiffeBundle;
  sequence: number | undefined;
  refreshHintSeconds: number | undefined;
  /** False when it is the bundle held already (same sequence, same content): nothing to adopt. */
  changed: boolean;
}

/**
 * Judges a bundle fetched for (or given as the initial bundle of) the foreign trust domain
 * `expected`, against the last good one: the SPIFFE Trust Domain and Bundle format (§4; the
 * parser ignores elements the standard says to ignore), at most MAX_BUNDLE_BYTES, at least one
 * usable key unless `keys` is empty (an empty set is the peer revoking everything, §4.1.3), every
 * X.509 authority that names a trust domain in a SPIFFE URI SAN naming `expected` (the bundle
 * itself does not say whose it is; a CA certificate does, and SPIRE's and Hallmark's both carry
 * the SAN), and `spiffe_sequence` never going back nor repeating with other content, so that a
 * replayed older bundle cannot bring back a key the peer dropped.
 */
export function judgeForeignBundle(
  body: string | Uint8Array,
  expected: TrustDomain,
  current: { json?: string | undefined; sequence?: number | undefined } = {},
): JudgedBundle {
  const bytes = typeof body === "string" ? Buffer.byteLength(body, "utf8") : body.length;
  if (bytes > MAX_BUNDLE_BYTES) throw federationError("federation_bundle_too_large", `the bundle is ${bytes} bytes; at most ${MAX_BUNDLE_BYTES} are accepted`);
  let doc: unknown;
  try {
    doc = JSON.parse(typeof body === "string" ? body : Buffer.from(body).toString("utf8"));
  } catch {
    throw federationError("federation_bundle_malformed", "the bundle is not JSON");
  }
  let bundle: SpiffeBundle;
  try {
    bundle = parseSpiffeBundle(doc as Record<string, unknown>);
  } catch (e) {
    throw federationError("federation_bundle_malformed", isHallmarkError(e) ? e.message : "the bundle cannot be read", { cause: e });
  }
  const keyCount = (doc as { keys: unknown[] }).keys.length;
  const usable = bundle.x509Authorities.length + bundle.jwtAuthorities.length + bundle.witAuthorities.length;
  if (keyCount > 0 && usable === 0) throw federationError("federation_bundle_malformed", `none of the bundle's ${keyCount} keys is a usable x509-svid, jwt-svid or wit-svid key`);
  for (const der of bundle.x509Authorities) {
    for (const td of spiffeTrustDomainsOf(der)) {
      if (!td.equals(expected)) {
        throw federationError("federation_wrong_trust_domain", `an X.509 authority of the bundle belongs to ${td.name}, not ${expected.name}`);
      }
    }
  }
  const json = JSON.stringify(doc);
  const sequence = bundle.sequence;
  if (current.sequence !== undefined) {
    if (sequence === undefined || sequence < current.sequence) {
      throw federationError("federation_sequence_regressed", `spiffe_sequence ${sequence ?? "(absent)"} is behind the ${current.sequence} held`);
    }
    if (sequence === current.sequence && json !== current.json) {
      throw federationError("federation_sequence_regressed", `spiffe_sequence ${sequence} is the one held, with other content: a changed bundle must carry a new sequence`);
    }
  }
  return { json, bundle, sequence, refreshHintSeconds: bundle.refreshHintSeconds, changed: json !== current.json };
}

/** The trust domains an authority's SPIFFE URI SANs name (none for a CA without one). */
function spiffeTrustDomainsOf(der: Buffer): TrustDomain[] {
  const san = new X509Certificate(der).subjectAltName ?? "";
  return san
    .split(", ")
    .filter((s) => s.startsWith("URI:spiffe://"))
    .map((s) => trustDomainOfUri(s.slice(4)))
    .filter((td): td is TrustDomain => td !== undefined);
}
