import { generateKeyPairSync } from "node:crypto";
import { isIP } from "node:net";
import type { Server as TlsServer } from "node:tls";
import type { Logger } from "pino";
import type { TlsMaterial } from "../api/app.js";
import { TLS_POLICY } from "../api/tls-policy.js";
import type { AuditLog } from "../audit/log.js";
import { isHallmarkError } from "../errors.js";
import { pemChain } from "../pki/pem.js";
import { AUDIT_EVENTS } from "../service/audit-events.js";
import type { Clock } from "../service/clock.js";
import type { SvidIssuer } from "../service/ports.js";
import type { SpiffeId } from "../spiffe/id.js";

const SERVER_SVID_TTL_SECONDS = 24 * 3600;

/** Why the server issued itself a new SVID: said in its audit record. */
export type ServerSvidReason = "start" | "half_life" | "bundle_changed" | "retry";

export interface ServerNames {
  dnsNames: string[];
  ipAddresses: string[];
}

/**
 * The names in the server's SVID besides its SPIFFE ID, for clients that check the host they
 * dialled: localhost, the listen host (a DNS name or an address), and the configured extras. A
 * wildcard listen address (0.0.0.0, ::) names no host a client could dial; it is named by the
 * loopback addresses it also answers on (both for ::, which accepts IPv4 too), and the public
 * names and addresses come from configuration (`tls.dnsNames`, `tls.ipAddresses`).
 */
export function serverCertificateNames(listenHost: string, configured: ServerNames): ServerNames {
  const family = isIP(listenHost);
  const fromListen =
    listenHost === "0.0.0.0" ? ["127.0.0.1"] : listenHost === "::" ? ["127.0.0.1", "::1"] : family !== 0 ? [listenHost] : [];
  return {
    dnsNames: [...new Set(["localhost", ...(family === 0 ? [listenHost] : []), ...configured.dnsNames])],
    ipAddresses: [...new Set([...fromListen, ...configured.ipAddresses])],
  };
}

/**
 * The server's own X509-SVID (spiffe://<td>/hallmark/server) for its HTTPS listener, renewed at
 * half-life and whenever the bundle changes, and swapped into the live listener. Its key is a
 * TLS key held in memory, as any TLS server's is; the CA key stays in the HSM. Every issuance,
 * and every failed one, is in the audit log like any other SVID's.
 */
export class ServerTlsIdentity {
  private server: TlsServer | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: {
      serverId: SpiffeId;
      issuer: SvidIssuer;
      audit: AuditLog;
      bundlePem: () => Promise<string>;
      /**
       * Certificates sent after the SVID's own chain: during a rotation, the new CA cross-signed
       * by the previous key, so clients whose bundle predates the rotation still verify us.
       */
      crossSigned: () => Promise<Buffer[]>;
      names: ServerNames;
      clock: Clock;
      log: Logger;
    },
  ) {}

  async issue(reason: ServerSvidReason = "start"): Promise<TlsMaterial> {
    const now = this.deps.clock();
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = publicKey.export({ type: "spki", format: "der" });
    const record = { time: now, event: AUDIT_EVENTS.issueServerSvid, actor: "server", spiffeId: this.deps.serverId.toString() };
    let svid;
    try {
      svid = await this.deps.issuer.issueX509({ spki, spiffeId: this.deps.serverId, ttlSeconds: SERVER_SVID_TTL_SECONDS, ...this.deps.names, now });
    } catch (e) {
      const refused = isHallmarkError(e);
      await this.deps.audit.append({
        ...record,
        outcome: refused ? "refused" : "error",
        code: refused ? e.code : "internal",
        details: { reason, why: refused ? e.message : "internal error" },
      });
      throw e;
    }
    await this.deps.audit.append({ ...record, outcome: "success", serial: svid.serial, details: { reason, notAfter: svid.notAfter.toISOString(), ...this.deps.names } }, svid.svidRecord);
    this.schedule(svid.notAfter);
    return {
      key: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
      cert: pemChain([...svid.chain, ...(await this.deps.crossSigned())]),
      ca: await this.deps.bundlePem(),
    };
  }

  attach(server: TlsServer): void {
    this.server = server;
  }

  async refresh(reason: Exclude<ServerSvidReason, "start">): Promise<void> {
    try {
      const m = await this.issue(reason);
      this.server?.setSecureContext({ key: m.key, cert: m.cert, ca: m.ca, ...TLS_POLICY });
      this.deps.log.info({ reason }, "server TLS identity refreshed");
    } catch (e) {
      this.deps.log.error({ err: e }, "server TLS identity refresh failed; retrying in 60 s");
      this.timer = setTimeout(() => void this.refresh("retry"), 60_000).unref();
    }
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(notAfter: Date): void {
    if (this.timer) clearTimeout(this.timer);
    const ms = Math.max(1000, (notAfter.getTime() - this.deps.clock().getTime()) / 2);
    this.timer = setTimeout(() => void this.refresh("half_life"), Math.min(ms, 2 ** 31 - 1)).unref();
  }
}
