import { type PeerCertificate, rootCertificates } from "node:tls";
import { boundedRequest } from "../client/bounded-request.js";
import { checkServerSpiffeId } from "../client/http.js";
import { HallmarkError } from "../errors.js";
import { MAX_BUNDLE_BYTES } from "../issuer/bundle.js";
import { pemChain } from "../pki/pem.js";
import { federationError } from "./errors.js";

/** How one bundle endpoint is reached and authenticated (SPIFFE Federation §5.2). */
export type BundleEndpoint =
  | {
      profile: "https_web";
      url: string;
      /** PEM roots; undefined: Node's bundled Mozilla roots (the public Web PKI). */
      webRootsPem?: string | undefined;
    }
  | {
      profile: "https_spiffe";
      url: string;
      endpointSpiffeId: string;
      /** DER X.509 authorities of the endpoint's trust domain: its latest bundle (§5.2.2.4). */
      authorities: Buffer[];
    };

export interface BundleFetchLimits {
  timeoutMs: number;
  maxBytes?: number;
}

/** TLS verification codes of OpenSSL (via Node) that mean "this certificate is not one we trust". */
const UNTRUSTED = /^(UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|CERT_|ERR_TLS_CERT_ALTNAME|HOSTNAME_MISMATCH|INVALID_CA|PATH_LENGTH|ERR_SSL_)/;

/** Marks checkServerIdentity's refusal so the caller can tell an ID mismatch from an untrusted chain. */
const ENDPOINT_ID_MISMATCH = Symbol("endpoint id mismatch");

/**
 * Fetches a SPIFFE bundle from a bundle endpoint: one GET, no client authentication (§5.2.1.3),
 * bounded in time and size, and no redirect followed (the standard allows following one to a URL
 * that is itself valid; Hallmark refuses them, so a relationship only ever talks to the URL its
 * administrator configured). Returns the body; judging it is foreign-bundle.ts's job.
 *
 * https_web: the server certificate must chain to the configured roots and name the URL's host
 * (RFC 6125, Node's default check). https_spiffe: it must chain to the endpoint trust domain's
 * current X.509 authorities and carry the endpoint SPIFFE ID as its URI SAN (X509-SVID); the
 * host name plays no part.
 */
export async function fetchBundle(endpoint: BundleEndpoint, limits: BundleFetchLimits): Promise<Buffer> {
  const maxBytes = limits.maxBytes ?? MAX_BUNDLE_BYTES;
  const url = new URL(endpoint.url);
  if (url.protocol !== "https:" || url.username || url.password) {
    throw federationError("federation_invalid", "a bundle endpoint URL is https:// without userinfo");
  }
  const tls =
    endpoint.profile === "https_web"
      ? { ca: endpoint.webRootsPem ?? [...rootCertificates] }
      : {
          ca: pemChain(endpoint.authorities),
          checkServerIdentity: (_host: string, cert: PeerCertificate) => {
            const e = checkServerSpiffeId(cert, endpoint.endpointSpiffeId);
            if (e) Object.assign(e, { [ENDPOINT_ID_MISMATCH]: true });
            return e;
          },
        };
  let answer;
  try {
    answer = await boundedRequest(url, {
      accept: "application/json",
      tls,
      maxBytes,
      timeoutMs: limits.timeoutMs,
      tooLarge: () => tooLarge(maxBytes),
      timedOut: () => federationError("federation_fetch_failed", `no complete answer within ${limits.timeoutMs} ms`),
    });
  } catch (e) {
    if (e instanceof HallmarkError) throw e;
    throw connectionError(e as NodeJS.ErrnoException);
  }
  if (answer.status >= 300 && answer.status < 400) {
    throw federationError(
      "federation_redirect_refused",
      `the bundle endpoint answered HTTP ${answer.status} (to ${String(answer.headers.location ?? "nowhere").slice(0, 200)}); redirects are not followed`,
    );
  }
  if (answer.status !== 200) throw federationError("federation_fetch_failed", `the bundle endpoint answered HTTP ${answer.status}`);
  return answer.body;
}

const tooLarge = (max: number) => federationError("federation_bundle_too_large", `the bundle endpoint sent more than ${max} bytes`);

function connectionError(e: NodeJS.ErrnoException): Error {
  if ((e as unknown as Record<symbol, unknown>)[ENDPOINT_ID_MISMATCH]) {
    return federationError("federation_endpoint_id_mismatch", e.message);
  }
  if (UNTRUSTED.test(e.code ?? "")) return federationError("federation_endpoint_untrusted", `the endpoint's certificate is not trusted: ${e.code}: ${e.message}`);
  return federationError("federation_fetch_failed", `cannot reach the bundle endpoint: ${e.code ?? ""} ${e.message}`.trim());
}
