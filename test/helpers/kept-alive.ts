import { Agent, request } from "node:https";
import type { Socket } from "node:net";
import { newClientKey } from "../../src/client/csr.js";
import type { SvidFiles } from "../../src/client/attest.js";

/**
 * One kept-alive TLS connection authenticated by one SVID: every request reuses it, so a test
 * can show that a credential dies on a connection that was opened while it was still good.
 */
export class KeptAliveNode {
  private readonly agent: Agent;
  readonly sockets = new Set<Socket>();
  closed = false;

  constructor(
    private readonly serverUrl: string,
    readonly svid: SvidFiles,
  ) {
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: 1,
      ca: svid.bundlePem,
      cert: svid.certChainPem,
      key: svid.privateKeyPem,
      checkServerIdentity: () => undefined,
    });
  }

  post(path: string, body: unknown): Promise<{ status: number; body: { code?: string } & Record<string, unknown>; connection?: string }> {
    return new Promise((resolve, reject) => {
      const payload = JSON.stringify(body);
      const req = request(
        `${this.serverUrl}${path}`,
        { method: "POST", agent: this.agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")), connection: res.headers.connection }),
          );
        },
      );
      req.on("socket", (s: Socket) => {
        if (!this.sockets.has(s)) s.once("close", () => (this.closed = true));
        this.sockets.add(s);
      });
      req.on("error", reject);
      req.end(payload);
    });
  }

  async x509(spiffeId: string) {
    return this.post("/v1/svids/x509", { csr: (await newClientKey()).csrPem, spiffe_id: spiffeId });
  }

  async renew() {
    return this.post("/v1/node/renew", { csr: (await newClientKey()).csrPem });
  }

  destroy(): void {
    this.agent.destroy();
  }
}

export async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!condition() && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
  if (!condition()) throw new Error(`timed out waiting for ${what}`);
}
