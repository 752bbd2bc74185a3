import { X509Certificate, createPrivateKey } from "node:crypto";
import { statSync } from "node:fs";
import type { Server as TlsServer } from "node:tls";
import type { Logger } from "pino";
import { buildWebBundleApp } from "../api/app.js";
import { TLS_POLICY } from "../api/tls-policy.js";
import type { WellKnownRouteDeps } from "../api/well-known-routes.js";
import { HallmarkError } from "../errors.js";
import { pemChain, readCertificateFiles } from "../pki/pem.js";
import type { Clock } from "../service/clock.js";
import { boundHttpsUrl, splitHostPort } from "./listen.js";
import { readSecretFile } from "./secrets.js";

export interface WebBundleEndpointConfig {
  listen: string;
  certFile: string;
  keyFile: string;
  reloadInterval: number;
}

interface WebTlsFiles {
  /** PEM: the certificate, then its intermediates. */
  cert: string;
  key: string;
  /** What the log may say about the certificate (never the key). */
  summary: { subject: string; subjectAltName: string | undefined; notAfter: string; fingerprint256: string };
}

/**
 * Reads and checks the Web PKI certificate chain and its key: a PEM chain, the leaf first, whose
 * key is the one in keyFile. A bad pair is refused with one line naming the file, not the content.
 */
function readWebTlsFiles(certFile: string, keyFile: string): WebTlsFiles {
  const where = "federation.bundleEndpoint";
  const chain = readCertificateFiles([certFile], `${where}.certFile`);
  const key = readSecretFile(keyFile, `${where}.keyFile`);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(chain[0] ?? Buffer.alloc(0));
  } catch {
    throw new HallmarkError("config_invalid", `${where}.certFile: ${certFile} holds no PEM certificate`);
  }
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(key));
  } catch {
    throw new HallmarkError("config_invalid", `${where}.keyFile: ${keyFile} holds no readable unencrypted PEM private key`);
  }
  if (!matches) throw new HallmarkError("config_invalid", `${where}: the key in ${keyFile} is not the key of the first certificate in ${certFile}`);
  return {
    cert: pemChain(chain),
    key,
    summary: { subject: leaf.subject, subjectAltName: leaf.subjectAltName, notAfter: leaf.validTo, fingerprint256: leaf.fingerprint256 },
  };
}

export interface RunningWebBundleEndpoint {
  url: string;
  close(): Promise<void>;
}

/**
 * The https_web bundle endpoint: its own listener, since a Web PKI certificate names a public host
 * and must not be mixed with the SVID the main listener presents to nodes. The files are polled,
 * so an ACME client renewing them in place needs no restart; a renewal that fails to load leaves
 * the previous certificate serving and says so in the log.
 */
export async function startWebBundleEndpoint(
  config: WebBundleEndpointConfig,
  deps: WellKnownRouteDeps & { log: Logger; clock: Clock },
): Promise<RunningWebBundleEndpoint> {
  const log = deps.log.child({ component: "web-bundle-endpoint" });
  let files = readWebTlsFiles(config.certFile, config.keyFile);
  const warnIfExpired = () => {
    if (new Date(files.summary.notAfter).getTime() <= deps.clock().getTime()) log.warn({ certificate: files.summary }, "the Web PKI certificate has expired; federation peers will refuse it");
  };
  warnIfExpired();
  const app = await buildWebBundleApp({ log, tls: files }, deps);
  const [host, port] = splitHostPort(config.listen);
  await app.listen({ host, port });
  const server = app.server as unknown as TlsServer;
  const url = boundHttpsUrl(server, host, port);
  log.info({ url, certificate: files.summary }, "https_web bundle endpoint listening");

  const mtimes = () => {
    try {
      return `${statSync(config.certFile).mtimeMs}:${statSync(config.keyFile).mtimeMs}`;
    } catch {
      return "missing";
    }
  };
  let seen = mtimes();
  const timer = setInterval(() => {
    const now = mtimes();
    if (now === seen) return;
    seen = now;
    try {
      files = readWebTlsFiles(config.certFile, config.keyFile);
      server.setSecureContext({ key: files.key, cert: files.cert, ...TLS_POLICY });
      log.info({ certificate: files.summary }, "Web PKI certificate reloaded");
      warnIfExpired();
    } catch (e) {
      log.error({ err: e instanceof HallmarkError ? e.message : "unreadable" }, "Web PKI certificate not reloaded; the previous one keeps serving");
    }
  }, config.reloadInterval * 1000);
  timer.unref();
  return {
    url,
    async close() {
      clearInterval(timer);
      await app.close();
    },
  };
}
