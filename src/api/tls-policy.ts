import { constants } from "node:crypto";
import type { SecureContextOptions } from "node:tls";

/**
 * The TLS policy of every listener Hallmark serves (the public API, its refreshed SVID context,
 * the https_web bundle endpoint), defined once so a listener cannot drift from the others.
 *
 * - TLS 1.2 and 1.3 only.
 * - TLS 1.2: ECDHE key exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305) only. OpenSSL's
 *   default list also offers CBC suites (LUCKY13-style padding oracles), CCM8 (a 64-bit tag) and
 *   ARIA/CAMELLIA; none of them is needed by a client that speaks TLS 1.2 at all. RSA suites stay
 *   for the https_web listener, whose Web PKI certificate may carry an RSA key.
 * - TLS 1.3: its three suites are all AEAD; they must be named here, since Node turns TLS 1.3
 *   off for a context whose cipher string lists no TLS 1.3 suite.
 * - No renegotiation (SSL_OP_NO_RENEGOTIATION): client-initiated renegotiation is a CPU
 *   amplification (CVE-2011-1473) and Hallmark never needs it; TLS 1.3 has none anyway. Node's
 *   own CLIENT_RENEG_LIMIT only caps it at three per ten minutes.
 */
export const TLS_POLICY = {
  minVersion: "TLSv1.2",
  ciphers: [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
  ].join(":"),
  honorCipherOrder: true,
  secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
} as const satisfies SecureContextOptions;
