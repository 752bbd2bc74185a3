import { type Client, type ClientReadableStream, Metadata, type ServiceError, credentials, loadPackageDefinition, status } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { HallmarkError } from "../errors.js";
import { TAG, concatenatedElements } from "../issuer/der-reader.js";
import { socketFromEnvironment } from "./endpoint.js";
import { workloadApiError } from "./errors.js";
import { WORKLOAD_PROTO_OPTIONS, workloadProtoPath } from "./server.js";

export interface FetchedX509Svid {
  spiffeId: string;
  /** DER, leaf first. */
  certChain: Buffer[];
  /** DER PKCS#8. */
  privateKey: Buffer;
  /** DER certificates of the SVID's trust domain. */
  bundle: Buffer[];
  hint: string;
}

/**
 * A SPIFFE Workload API client over the agent's Unix socket, as `spire-agent api fetch` is: the
 * first message of each stream, then the call is cancelled. Every call carries the
 * `workload.spiffe.io: true` metadata the standard requires.
 */
export class WorkloadApiClient {
  private readonly client: Client & Record<string, (...args: unknown[]) => unknown>;

  constructor(socket: string = socketFromEnvironment()) {
    const definition = loadPackageDefinition(loadSync(workloadProtoPath(), WORKLOAD_PROTO_OPTIONS)) as unknown as {
      SpiffeWorkloadAPI: new (address: string, creds: ReturnType<typeof credentials.createInsecure>, options: Record<string, unknown>) => Client;
    };
    // A connection of its own (grpc-js otherwise shares one among all clients of an address), so
    // that close() ends it and one client's streams never count against another's connection.
    this.client = new definition.SpiffeWorkloadAPI(`unix:${socket}`, credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 }) as Client &
      Record<string, (...args: unknown[]) => unknown>;
  }

  async fetchX509(): Promise<FetchedX509Svid[]> {
    const first = (await this.firstMessage("FetchX509SVID", {})) as {
      svids: Array<{ spiffe_id: string; x509_svid: Buffer; x509_svid_key: Buffer; bundle: Buffer; hint: string }>;
    };
    return first.svids.map((s) => ({
      spiffeId: s.spiffe_id,
      certChain: certificates(s.x509_svid, "x509_svid"),
      privateKey: s.x509_svid_key,
      bundle: certificates(s.bundle, "bundle"),
      hint: s.hint,
    }));
  }

  /** Trust domain ID → DER certificates. */
  async fetchX509Bundles(): Promise<Map<string, Buffer[]>> {
    const first = (await this.firstMessage("FetchX509Bundles", {})) as { bundles: Record<string, Buffer> };
    return new Map(Object.entries(first.bundles).map(([td, der]) => [td, certificates(der, `bundle of ${td}`)]));
  }

  /** Trust domain ID → JWKS. */
  async fetchJwtBundles(): Promise<Map<string, unknown>> {
    const first = (await this.firstMessage("FetchJWTBundles", {})) as { bundles: Record<string, Buffer> };
    return new Map(Object.entries(first.bundles).map(([td, json]) => [td, JSON.parse(json.toString("utf8")) as unknown]));
  }

  /** WIT-SVIDs with their private JWKs (the WIT-SVID profile). */
  async fetchWit(spiffeId?: string): Promise<Array<{ spiffeId: string; token: string; privateKeyJwk: Record<string, unknown>; hint: string }>> {
    const first = (await this.firstMessage("FetchWITSVID", { spiffe_id: spiffeId ?? "" })) as {
      svids: Array<{ spiffe_id: string; wit_svid: string; wit_svid_key: string; hint: string }>;
    };
    return first.svids.map((s) => ({ spiffeId: s.spiffe_id, token: s.wit_svid, privateKeyJwk: JSON.parse(s.wit_svid_key) as Record<string, unknown>, hint: s.hint }));
  }

  /** Trust domain ID → JWKS of WIT keys. */
  async fetchWitBundles(): Promise<Map<string, unknown>> {
    const first = (await this.firstMessage("FetchWITBundles", {})) as { bundles: Record<string, string> };
    return new Map(Object.entries(first.bundles).map(([td, json]) => [td, JSON.parse(json) as unknown]));
  }

  async fetchJwt(audience: string[], spiffeId?: string): Promise<Array<{ spiffeId: string; token: string; hint: string }>> {
    const r = (await this.unary("FetchJWTSVID", { audience, spiffe_id: spiffeId ?? "" })) as { svids: Array<{ spiffe_id: string; svid: string; hint: string }> };
    return r.svids.map((s) => ({ spiffeId: s.spiffe_id, token: s.svid, hint: s.hint }));
  }

  async validateJwt(token: string, audience: string): Promise<{ spiffeId: string; claims: unknown }> {
    const r = (await this.unary("ValidateJWTSVID", { audience, svid: token })) as { spiffe_id: string; claims: unknown };
    return { spiffeId: r.spiffe_id, claims: r.claims };
  }

  close(): void {
    this.client.close();
  }

  private unary(method: string, request: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.client[method]!(request, securityHeader(), (e: ServiceError | null, answer: unknown) => (e ? reject(grpcError(e)) : resolve(answer)));
    });
  }

  private firstMessage(method: string, request: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const stream = this.client[method]!(request, securityHeader()) as ClientReadableStream<unknown>;
      stream.once("data", (message: unknown) => {
        resolve(message);
        stream.cancel();
      });
      stream.on("error", (e: ServiceError) => {
        if (e.code !== status.CANCELLED) reject(grpcError(e));
      });
    });
  }
}

function securityHeader(): Metadata {
  const m = new Metadata();
  m.set("workload.spiffe.io", "true");
  return m;
}

function certificates(der: Buffer, what: string): Buffer[] {
  const certs = concatenatedElements(der, TAG.sequence);
  if (!certs || certs.length === 0) throw new HallmarkError("unavailable", `the Workload API sent a ${what} that is not DER certificates`);
  return certs;
}

/** The agent's refusal in words: the gRPC status name (PERMISSION_DENIED…) and its detail. */
function grpcError(e: ServiceError): HallmarkError {
  const name = (status[e.code] as string | undefined) ?? String(e.code);
  if (e.code === status.UNAVAILABLE) return new HallmarkError("unavailable", `cannot reach the Workload API: ${e.details || e.message}`, { cause: e });
  return workloadApiError("workload_api_refused", `${name}: ${e.details || e.message}`, { cause: e });
}
