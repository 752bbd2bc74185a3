import { mkdirSync } from "node:fs";
import { createServer, type Server as NetServer, type Socket } from "node:net";
import { dirname } from "node:path";
import { Server as GrpcServer, ServerCredentials, type ServiceDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import type { Logger } from "pino";
import { shippedFile } from "../project-files.js";
import { bindUnixSocket, isLiveSocket } from "../server/unix-socket.js";
import { workloadApiError } from "./errors.js";
import { addWorkloadReflection } from "./reflection.js";
import { assertSameProcess, type ConnectedPeer, connectedPeer } from "./peer-credentials.js";
import type { RunningWorkloadApi, WorkloadApiOptions } from "./ports.js";
import { type WorkloadCaller, workloadApiHandlers, type WorkloadServiceLimits } from "./service.js";

export interface WorkloadApiLimits extends WorkloadServiceLimits {
  /** Connections one uid may hold open at once; more are closed on accept. */
  maxConnectionsPerUid: number;
  /** Largest request a workload may send (requests of this API are a few hundred bytes). */
  maxRequestBytes: number;
}

export const DEFAULT_WORKLOAD_API_LIMITS: WorkloadApiLimits = {
  maxStreamsPerUid: 64,
  maxConnectionsPerUid: 256,
  maxRequestBytes: 64 * 1024,
  updateJitterMs: 500,
  // A tenth of the server's default allowance for the whole node (limits.issuanceRate, 500/s).
  jwtFetchRate: { perSecond: 50, burst: 100 },
};

/** The port's options plus what the agent may tune (both optional). */
export interface WorkloadApiServerOptions extends WorkloadApiOptions {
  log?: Logger;
  limits?: Partial<WorkloadApiLimits>;
}

/** proto-loader options that match the standard: field names as written, bytes as Buffer, enums by name. */
export const WORKLOAD_PROTO_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true } as const;

/** The Workload API's .proto, found from src/ (tests) or dist/src/ (the built CLI). */
export function workloadProtoPath(): string {
  return shippedFile("src/workload-api/workload.proto");
}

const PEER_PREFIX = "hallmark-workload-connection-";

/**
 * Serves the SPIFFE Workload API on a Unix socket. A Node net.Server accepts each connection, so
 * the kernel's peer credentials are read before any byte is parsed, then hands it to grpc-js
 * (createConnectionInjector). grpc-js tells a handler only its peer as a string, built from the
 * socket's `remoteAddress` (undefined for Unix sockets): each accepted socket is given its own
 * `remoteAddress`, a per-connection id that no client can choose, and the handler maps that id
 * back to the connection's credentials. The workload is attested per call from those credentials,
 * and the pid's start time is checked again right before each answer (pid reuse → Unauthenticated).
 */
export async function startWorkloadApi(options: WorkloadApiServerOptions): Promise<RunningWorkloadApi> {
  const { socketPath, identities, attestor, log } = options;
  const limits: WorkloadApiLimits = { ...DEFAULT_WORKLOAD_API_LIMITS, ...options.limits };

  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o755 });
  if (await isLiveSocket(socketPath)) {
    throw workloadApiError("workload_socket_in_use", `the Workload API socket ${socketPath} is held by another running process; stop it or choose another --socket`);
  }

  const packageDefinition = loadSync(workloadProtoPath(), WORKLOAD_PROTO_OPTIONS);
  const grpcServer = new GrpcServer({
    "grpc.max_receive_message_length": limits.maxRequestBytes,
    "grpc.max_concurrent_streams": limits.maxStreamsPerUid,
  });
  const connections = new Map<string, ConnectedPeer>();
  const connectionsPerUid = new Map<number, number>();

  async function callerOf(call: { getPeer(): string }): Promise<WorkloadCaller> {
    const peer = connections.get(call.getPeer());
    if (!peer) throw workloadApiError("workload_peer_unknown", "the call's connection has no peer credentials");
    const selectors = await attestor.attest(peer);
    // The selectors were read from /proc/<pid>: only valid if that pid is still the process that connected.
    assertSameProcess(peer);
    return { uid: peer.uid, pid: peer.pid, selectors, assertStillConnected: () => assertSameProcess(peer) };
  }

  grpcServer.addService(packageDefinition.SpiffeWorkloadAPI as ServiceDefinition, workloadApiHandlers({ identities, callerOf, limits, log }));
  addWorkloadReflection(grpcServer, packageDefinition);
  const injector = grpcServer.createConnectionInjector(ServerCredentials.createInsecure());

  let nextId = 0;
  const sockets = new Set<Socket>();
  const netServer: NetServer = createServer((socket) => {
    let peer: ConnectedPeer;
    try {
      peer = connectedPeer(socket);
    } catch (e) {
      log?.warn({ err: e }, "workload API: closing a connection whose peer is unknown");
      socket.destroy();
      return;
    }
    const open = connectionsPerUid.get(peer.uid) ?? 0;
    if (open >= limits.maxConnectionsPerUid) {
      log?.warn({ uid: peer.uid, pid: peer.pid, open }, "workload API: too many connections from one user; closing");
      socket.destroy();
      return;
    }
    connectionsPerUid.set(peer.uid, open + 1);
    const id = `${PEER_PREFIX}${++nextId}`;
    Object.defineProperty(socket, "remoteAddress", { value: id, configurable: true });
    connections.set(id, peer);
    sockets.add(socket);
    socket.once("close", () => {
      connections.delete(id);
      sockets.delete(socket);
      const n = (connectionsPerUid.get(peer.uid) ?? 1) - 1;
      if (n === 0) connectionsPerUid.delete(peer.uid);
      else connectionsPerUid.set(peer.uid, n);
    });
    // A client that resets mid-stream must never surface as an unhandled error.
    socket.on("error", (e) => log?.debug({ err: e, pid: peer.pid }, "workload API connection error"));
    injector.injectConnection(socket);
  });

  // Any local process may connect (0777): the kernel, not the file mode, says who is asking.
  const removeSocket = await bindUnixSocket(socketPath, 0o777, (bound) => new Promise<void>((done, fail) => {
    netServer.once("error", fail);
    netServer.listen(bound, () => {
      netServer.off("error", fail);
      done();
    });
  }));
  log?.info({ socket: socketPath }, "Workload API listening");

  return {
    socketPath,
    close: async () => {
      removeSocket();
      await new Promise<void>((done) => {
        netServer.close(() => done());
        injector.destroy();
        grpcServer.forceShutdown();
        for (const s of sockets) s.destroy();
      });
    },
  };
}
