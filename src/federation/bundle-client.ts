import { request } from "node:https";
import { type PeerCertificate, rootCertificates } from "node:tls";
import { checkServerSpiffeId } from "../client/http.js";
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
export function fetchBundle(endpoint: BundleEndpoint, limits: BundleFetchLimits): Promise<Buffer> {
  const maxBytes = limits.maxBytes ?? MAX_BUNDLE_BYTES;
  const url = new URL(endpoint.url);
  if (url.protocol !== "https:" || url.username || url.password) {
    return Promise.reject(federationError("federation_invalid", "a bundle endpoint URL is https:// without userinfo"));
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
  return new Promise<Buffer>((resolve, reject) => {
    let settled = false;
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      reject(e);
    };
    const req = request(url, { method: "GET", agent: false, headers: { accept: "application/json" }, rejectUnauthorized: true, ...tls }, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400) {
        res.resume();
        return fail(federationError("federation_redirect_refused", `the bundle endpoint answered HTTP ${status} (to ${String(res.headers.location ?? "nowhere").slice(0, 200)}); redirects are not followed`));
      }
      if (status !== 200) {
        res.resume();
        return fail(federationError("federation_fetch_failed", `the bundle endpoint answered HTTP ${status}`));
      }
      const declared = Number(res.headers["content-length"] ?? NaN);
      if (declared > maxBytes) return fail(tooLarge(maxBytes));
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > maxBytes) return fail(tooLarge(maxBytes));
        chunks.push(c);
      });
      res.on("error", (e) => fail(federationError("federation_fetch_failed", `the answer broke off: ${e.message}`)));
      res.on("end", () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(Buffer.concat(chunks));
      });
    });
    const timer = setTimeout(() => fail(federationError("federation_fetch_failed", `no complete answer within ${limits.timeoutMs} ms`)), limits.timeoutMs);
    req.on("error", (e: NodeJS.ErrnoException) => fail(connectionError(e)));
    req.end();
  });
}

const tooLarge = (max: number) => federationError("federation_bundle_too_large", `the bundle endpoint sent more than ${max} bytes`);

function connectionError(e: NodeJS.ErrnoException): Error {
  if ((e as unknown as Record<symbol, unknown>)[ENDPOINT_ID_MISMATCH]) {
    return federationError("federation_endpoint_id_mismatch", e.message);
  }
  if (UNTRUSTED.test(e.code ?? "")) return federationError("federation_endpoint_untrusted", `the endpoint's certificate is not trusted: ${e.code}: ${e.message}`);
  return federationError("federation_fetch_failed", `cannot reach the bundle endpoint: ${e.code ?? ""} ${e.message}`.trim());
}
