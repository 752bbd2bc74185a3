import { Agent, type AgentOptions } from "node:https";
import type { ClientRequestArgs } from "node:http";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import { HallmarkError } from "../errors.js";
import { NODE_PROOF_HEADER, NODE_SVID_HEADER, nodeProofMessage } from "../pki/channel-proof.js";
import { pemBlocks } from "../pki/pem.js";
import { ConnectionFailure } from "./server-list.js";

/** A node key that cannot sign a TLS handshake (a TPM-resident key): node calls carry a channel-bound proof instead. */
export interface NodeProofKey {
  /** The node SVID chain, PEM, leaf first. */
  chainPem: string;
  /** Signs `message` with the SVID's key: ECDSA with SHA-256 (DER), or RSA PKCS#1 v1.5 with SHA-256. */
  sign: (message: Buffer) => Promise<Buffer>;
}

/**
 * An https.Agent for channel-bound node authentication (the protocol: src/pki/channel-proof.ts).
 * Every connection it opens computes its proof once, right after its TLS 1.3 handshake: the
 * exporter value of that connection, signed by the node's key (one TPM signature per connection,
 * however many requests the kept-alive connection carries). `headersFor` hands a request the
 * headers of the socket it was given, so a pooled socket never carries another socket's proof.
 */
export class NodeProofAgent extends Agent {
  private readonly proofs = new WeakMap<object, Promise<Record<string, string>>>();
  private readonly svidHeader: string;
  private readonly leafDer: Buffer;

  constructor(
    options: AgentOptions,
    private readonly key: NodeProofKey,
  ) {
    // The exporter is bound to one connection only from TLS 1.3 on; the server refuses proofs on 1.2.
    super({ ...options, minVersion: "TLSv1.3", cert: undefined, key: undefined });
    const chain = pemBlocks(key.chainPem);
    if (chain.length === 0) throw new HallmarkError("svid_unreadable", "the node SVID chain holds no certificate");
    this.leafDer = chain[0]!;
    this.svidHeader = chain.map((c) => c.toString("base64")).join(",");
  }

  override createConnection(options: ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    const socket = super.createConnection(options, callback) as TLSSocket;
    const proof = new Promise<Record<string, string>>((resolve, reject) => {
      socket.once("secureConnect", () => {
        let message: Buffer;
        try {
          message = nodeProofMessage((length, label, context) => socket.exportKeyingMaterial(length, label, context), this.leafDer);
        } catch (e) {
          reject(e as Error);
          return;
        }
        this.key.sign(message).then(
          (signature) => resolve({ [NODE_SVID_HEADER]: this.svidHeader, [NODE_PROOF_HEADER]: signature.toString("base64") }),
          // A TPM that cannot be reached is not a server that cannot be: say which (and retry later).
          (e: Error) => reject(e instanceof HallmarkError ? e : new HallmarkError("unavailable", `the node proof could not be signed: ${e.message}`, { cause: e })),
        );
      });
      socket.once("close", () => reject(new ConnectionFailure("the connection closed before its node proof was made")));
    });
    // A socket that fails before any request awaits it must not leave an unhandled rejection behind.
    proof.catch(() => undefined);
    this.proofs.set(socket, proof);
    return socket;
  }

  /** The proof headers of the connection `socket` (made by this agent). */
  headersFor(socket: object): Promise<Record<string, string>> {
    return this.proofs.get(socket) ?? Promise.reject(new HallmarkError("unavailable", "the connection was not opened by the node-proof agent"));
  }
}
