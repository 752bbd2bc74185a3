import { generateKeyPairSync } from "node:crypto";
import { isIP } from "node:net";
import type { Server as TlsServer } from "node:tls";
import type { Logger } from "pino";
import type { TlsMaterial } from "../api/app.js";
import { pemChain } from "../pki/pem.js";
import type { Clock } from "../service/clock.js";
import type { SvidIssuer } from "../service/ports.js";
import type { SpiffeId } from "../spiffe/id.js";

const SERVER_SVID_TTL_SECONDS = 24 * 3600;

/**
 * The server's own X509-SVID (spiffe://<td>/hallmark/server) for its HTTPS listener, renewed at
 * half-life and whenever the bundle changes, and swapped into the live listener. Its key is a
 * TLS key held in memory, as any TLS server's is; the CA key stays in the HSM.
 */
export class ServerTlsIdentity {
  private server: TlsServer | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: {
      serverId: SpiffeId;
      issuer: SvidIssuer;
      bundlePem: () => Promise<string>;
      host: string;
      clock: Clock;
      log: Logger;
    },
  ) {}

  async issue(): Promise<TlsMaterial> {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = publicKey.export({ type: "spki", format: "der" });
    const dnsNames = ["localhost", ...(isIP(this.deps.host) === 0 && this.deps.host !== "localhost" ? [this.deps.host] : [])];
    const svid = await this.deps.issuer.issueX509({
      spki,
      spiffeId: this.deps.serverId,
      ttlSeconds: SERVER_SVID_TTL_SECONDS,
      dnsNames,
      now: this.deps.clock(),
    });
    this.schedule(svid.notAfter);
    return {
      key: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
      cert: pemChain(svid.chain),
      ca: await this.deps.bundlePem(),
    };
  }

  attach(server: TlsServer): void {
    this.server = server;
  }

  async refresh(): Promise<void> {
    try {
      const m = await this.issue();
      this.server?.setSecureContext({ key: m.key, cert: m.cert, ca: m.ca, minVersion: "TLSv1.2" });
      this.deps.log.info("server TLS identity refreshed");
    } catch (e) {
      this.deps.log.error({ err: e }, "server TLS identity refresh failed; retrying in 60 s");
      this.timer = setTimeout(() => void this.refresh(), 60_000).unref();
    }
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(notAfter: Date): void {
    if (this.timer) clearTimeout(this.timer);
    const ms = Math.max(1000, (notAfter.getTime() - this.deps.clock().getTime()) / 2);
    this.timer = setTimeout(() => void this.refresh(), Math.min(ms, 2 ** 31 - 1)).unref();
  }
}
