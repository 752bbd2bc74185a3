import { X509Certificate } from "node:crypto";
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import type { EvidenceProducer } from "../attestors/types.js";
import { attest } from "../client/attest.js";
import { writeFileAtomic, writeSvidFiles } from "../client/files.js";
import { NodeClient } from "../client/node.js";
import { ServerList, type ServerTarget } from "../client/server-list.js";
import { errorSpec } from "../error-codes.js";
import { HallmarkError, isHallmarkError } from "../errors.js";
import { SpiffeId } from "../spiffe/id.js";
import { Backoff, sleep } from "./backoff.js";
import { agentError } from "./errors.js";
import { keepNodeReceipt } from "./node-receipt.js";

export interface NodeIdentityOptions {
  /** The server, or its replicas: pass one ServerList so that attestation and node calls share which one answered last. */
  server: ServerTarget;
  /** The SPIFFE ID the server's certificate must carry; any /hallmark/server when undefined. */
  serverId?: string | undefined;
  /** The operator's --trust-bundle: used until the data directory holds the bundle the server last sent. */
  trustBundlePem: string;
  /** svid.pem, svid.key (0600), bundle.pem and node.json live here (0700). */
  dataDir: string;
  /** The attestor type: join_token nodes renew over mTLS, the others attest again with fresh evidence. */
  attestor: string;
  /** A producer for one attestation (src/client/producers.ts createProducer). */
  producer: () => Promise<EvidenceProducer>;
  /**
   * With --tpm-key-resident: a signer with the TPM-resident node key of a svid.tpmkey file. The
   * node then authenticates its calls with channel-bound proofs (src/client/node-proof-agent.ts)
   * instead of mutual TLS, and no svid.key ever exists.
   */
  residentKeySigner?: ((tpmKeyFile: string) => (message: Buffer) => Promise<Buffer>) | undefined;
  log: Logger;
  /** Retry delays while the server is unreachable (default 1 s doubling to 30 s). */
  retry?: { minMs: number; maxMs: number } | undefined;
  clock?: (() => Date) | undefined;
}

/** What the agent remembers of its attestation, so a restart knows a join token was spent. */
interface NodeRecordFile {
  spiffeId: string;
  attestor: string;
  attestedAt: string;
}

/** The node key: a PEM file's content, or the TPM key file of a key that never leaves the TPM. */
type NodeKey = { pem: string } | { tpmKeyFile: string };

interface NodeSvid {
  spiffeId: string;
  certPem: string;
  key: NodeKey;
  notBefore: Date;
  notAfter: Date;
  /**
   * When it was received (a stored one: when its file was written). Half-life counts from here,
   * not from notBefore: certificates are backdated for lagging clocks, and with short TTLs the
   * backdating alone would put every SVID past half its life at once.
   */
  receivedAt: Date;
}

/** Codes that say this SVID is no longer the node's: a new one is needed (attest again). */
const SVID_REFUSED = new Set(["node_svid_superseded", "node_svid_expired", "client_cert_invalid", "client_cert_required", "node_proof_invalid", "node_proof_svid_invalid"]);
/** Codes that say the node itself is refused: stop serving. */
const NODE_REFUSED = new Set(["node_evicted", "node_banned"]);

/** A failure worth retrying later: the server (or the way to it) is down, not a refusal. */
export function isTransient(e: unknown): boolean {
  if (!isHallmarkError(e)) return true;
  if (e.code === "unavailable") return true;
  const status = errorSpec(e.code).status;
  return status >= 500 || status === 429;
}

/**
 * The node's own identity: attested once, stored in the data directory, reused across restarts
 * while valid, renewed at half its life (over mTLS for join-token nodes, by attesting again with
 * fresh evidence for the others), with backoff while the server is down. A join token is used at
 * most once: node.json records the attestation, and a join-token node whose SVID is lost or
 * refused cannot come back (`failed` settles with agent_cannot_reattest).
 */
export class NodeIdentity {
  private current!: NodeSvid;
  private client_!: NodeClient;
  private removedBy: HallmarkError | undefined;
  private readonly renewedListeners = new Set<() => void>();
  private readonly removedListeners = new Set<(e: HallmarkError) => void>();
  private readonly stop = new AbortController();
  private settleFailed!: (e: HallmarkError) => void;
  /** Settles when the node cannot go on (a spent join token, an eviction or ban): the agent exits non-zero. */
  readonly failed: Promise<HallmarkError>;
  private renewing: Promise<void> | undefined;
  private readonly clock: () => Date;
  /** One list for every call, attestation included: the replica that answered last is tried first. */
  private readonly servers: ServerList;

  private constructor(private readonly o: NodeIdentityOptions) {
    this.clock = o.clock ?? (() => new Date());
    this.servers = ServerList.from(o.server);
    this.failed = new Promise((resolve) => (this.settleFailed = resolve));
  }

  static async start(o: NodeIdentityOptions): Promise<NodeIdentity> {
    const id = new NodeIdentity(o);
    prepareDataDir(o.dataDir);
    const stored = id.loadStored();
    if (stored) {
      id.adopt(stored, readIfExists(join(o.dataDir, "bundle.pem")) ?? o.trustBundlePem);
      o.log.info({ spiffeId: stored.spiffeId, expiresAt: stored.notAfter.toISOString() }, "agent: reusing the stored node SVID");
    } else {
      id.refuseSpentJoinToken("no valid node SVID is stored");
      await id.retrying("attest", () => id.attestNow());
    }
    id.scheduleRenewal();
    return id;
  }

  get spiffeId(): string {
    return this.current.spiffeId;
  }

  get expiresAt(): Date {
    return this.current.notAfter;
  }

  /** The client for node calls, with the current SVID; replaced at every renewal. */
  get client(): NodeClient {
    return this.client_;
  }

  get trustBundlePem(): string {
    return this.client_.trustBundlePem;
  }

  /** Why this node serves nothing (evicted, banned, unrecoverable), or undefined while it serves. */
  get removed(): HallmarkError | undefined {
    return this.removedBy;
  }

  onRenewed(listener: () => void): () => void {
    this.renewedListeners.add(listener);
    return () => this.renewedListeners.delete(listener);
  }

  onRemoved(listener: (e: HallmarkError) => void): () => void {
    this.removedListeners.add(listener);
    return () => this.removedListeners.delete(listener);
  }

  /**
   * One node call with the current SVID. A refusal of the SVID gets a new one (attesting again
   * where the attestor can) and one more try; a refusal of the node stops everything.
   */
  async call<T>(work: (client: NodeClient) => Promise<T>): Promise<T> {
    if (this.removedBy) throw this.removedBy;
    const used = this.client_;
    try {
      return await work(used);
    } catch (e) {
      this.stopIfNodeRefused(e);
      if (!isHallmarkError(e) || !SVID_REFUSED.has(e.code)) throw e;
      // The SVID refused is one this node has replaced since (a request that left on it while a
      // renewal finished, e.g. behind a held long poll): the current SVID answers, nothing is lost.
      if (used !== this.client_) return work(this.client_);
      this.o.log.warn({ code: e.code }, "agent: the server refused the node SVID; getting a new one");
      await this.replaceRefusedSvid(e);
      return work(this.client_);
    }
  }

  close(): void {
    this.stop.abort();
    this.client_?.close();
  }

  private async replaceRefusedSvid(cause: HallmarkError): Promise<void> {
    if (!this.canReattest()) {
      this.fail(agentError("agent_cannot_reattest", `the server refused this join-token node's SVID (${cause.code}) and a join token is used once: register the node again with a new token`));
      throw this.removedBy!;
    }
    this.renewing ??= this.attestNow().finally(() => (this.renewing = undefined));
    await this.renewing;
  }

  private canReattest(): boolean {
    return this.o.attestor !== "join_token";
  }

  /** A join-token node that attested once never presents its token again. */
  private refuseSpentJoinToken(why: string): void {
    const record = readJson<NodeRecordFile>(join(this.o.dataDir, "node.json"));
    if (this.canReattest() || !record) return;
    const e = agentError(
      "agent_cannot_reattest",
      `${why}, and this join-token node (${record.spiffeId}) attested on ${record.attestedAt}: a join token is used once; register the node again with a new token and an empty data directory`,
    );
    this.o.log.error({ code: e.code, spiffeId: record.spiffeId }, `agent: ${e.message}`);
    throw e;
  }

  /** An eviction or a ban (on a node call, or refusing a new attestation) stops everything. */
  private stopIfNodeRefused(e: unknown): void {
    if (!isHallmarkError(e) || !NODE_REFUSED.has(e.code)) return;
    this.fail(agentError("agent_node_removed", `the server refused this node (${e.code}: ${e.message})`));
    throw this.removedBy!;
  }

  private async attestNow(): Promise<void> {
    // A producer that cannot be made (a flag missing) will not be made by waiting: not transient.
    const producer = await this.o.producer().catch((e: unknown) => {
      throw isHallmarkError(e) ? e : new HallmarkError("invalid_request", (e as Error).message);
    });
    const svid = await attest({
      server: this.servers,
      tls: { trustBundlePem: this.client_?.trustBundlePem ?? this.o.trustBundlePem, serverId: this.o.serverId },
      producer,
    }).catch((e: unknown) => {
      this.stopIfNodeRefused(e);
      throw e;
    });
    const key = this.keyOf(svid);
    writeSvidFiles(this.o.dataDir, { certChainPem: svid.certChainPem, privateKeyPem: svid.privateKeyPem, keyFiles: svid.keyFiles, bundlePem: svid.bundlePem });
    // A node that switched to a TPM-resident key keeps no software key of an older SVID beside it.
    if ("tpmKeyFile" in key) rmSync(join(this.o.dataDir, "svid.key"), { force: true });
    const record: NodeRecordFile = { spiffeId: svid.spiffeId, attestor: this.o.attestor, attestedAt: this.clock().toISOString() };
    writeFileAtomic(join(this.o.dataDir, "node.json"), `${JSON.stringify(record)}\n`, 0o600);
    this.adopt(parseSvid(svid.certChainPem, key, this.clock()), svid.bundlePem);
    keepNodeReceipt({ ...this.o, trustBundlePem: svid.bundlePem }, svid.logIndex, this.stop.signal);
    this.o.log.info({ spiffeId: svid.spiffeId, attestor: this.o.attestor, expiresAt: svid.expiresAt }, "agent: node attested");
    this.emitRenewed();
  }

  /** The attested SVID's key: the software key, or the TPM key file when the key stayed in the TPM. */
  private keyOf(svid: { privateKeyPem?: string | undefined; keyFiles?: Record<string, string> | undefined }): NodeKey {
    if (svid.privateKeyPem !== undefined) return { pem: svid.privateKeyPem };
    const tpmKeyFile = svid.keyFiles?.["svid.tpmkey"];
    if (tpmKeyFile === undefined || !this.o.residentKeySigner) {
      throw agentError("agent_data_dir_unsafe", "the attestor kept the SVID key in hardware, and the agent has no way to sign with it");
    }
    return { tpmKeyFile };
  }

  private async renewNow(): Promise<void> {
    if (!this.canReattest()) {
      const r = await this.call((c) => c.renew());
      writeSvidFiles(this.o.dataDir, { certChainPem: r.certChainPem, privateKeyPem: r.privateKeyPem, bundlePem: r.bundlePem });
      this.adopt(parseSvid(r.certChainPem, { pem: r.privateKeyPem }, this.clock()), r.bundlePem);
      keepNodeReceipt({ ...this.o, trustBundlePem: r.bundlePem }, r.logIndex, this.stop.signal);
      this.o.log.info({ spiffeId: r.spiffeId, expiresAt: r.expiresAt }, "agent: node SVID renewed");
      this.emitRenewed();
    } else {
      await this.attestNow();
    }
  }

  /** Takes a new SVID with the bundle that came with it (the newest the server sent, or the stored one). */
  private adopt(svid: NodeSvid, bundlePem: string): void {
    const old = this.client_;
    this.current = svid;
    const credential =
      "pem" in svid.key
        ? { certPem: svid.certPem, keyPem: svid.key.pem }
        : { nodeProof: { chainPem: svid.certPem, sign: this.o.residentKeySigner!(svid.key.tpmKeyFile) } };
    this.client_ = new NodeClient(this.servers, { ...credential, trustBundlePem: bundlePem, serverId: this.o.serverId }, join(this.o.dataDir, "bundle.pem"));
    old?.close();
  }

  /** Renews at half of the SVID's life; failures retry with backoff until it expires. */
  private scheduleRenewal(): void {
    void (async () => {
      while (!this.stop.signal.aborted && !this.removedBy) {
        const { receivedAt, notAfter } = this.current;
        const half = receivedAt.getTime() + (notAfter.getTime() - receivedAt.getTime()) / 2;
        await sleep(Math.max(0, half - this.clock().getTime()), this.stop.signal);
        if (this.stop.signal.aborted || this.removedBy) return;
        try {
          await this.retrying("renew", () => this.renewNow(), notAfter);
        } catch (e) {
          if (this.stop.signal.aborted) return;
          this.fail(isHallmarkError(e) && e.code.startsWith("agent_") ? e : agentError("agent_cannot_reattest", `the node SVID could not be renewed: ${(e as Error).message}`));
          return;
        }
      }
    })();
  }

  /**
   * Runs `work` until it succeeds, waiting with backoff after transient failures. A refusal is
   * thrown at once. With `deadline` (the SVID's expiry), a join-token node gives up there, as
   * nothing can renew an expired SVID; an attestor that can attest again keeps trying.
   */
  private async retrying(what: string, work: () => Promise<void>, deadline?: Date): Promise<void> {
    const o = this.o.retry ?? { minMs: 1000, maxMs: 30_000 };
    const backoff = new Backoff(o.minMs, o.maxMs);
    for (;;) {
      try {
        await work();
        return;
      } catch (e) {
        if (!isTransient(e) || this.stop.signal.aborted) throw e;
        if (deadline && !this.canReattest() && this.clock() >= deadline) {
          throw agentError("agent_cannot_reattest", `the node SVID expired at ${deadline.toISOString()} while the server was unreachable, and a join-token node cannot attest again`);
        }
        const delay = backoff.next();
        this.o.log.warn({ task: what, code: isHallmarkError(e) ? e.code : "error", detail: (e as Error).message, retryInMs: Math.round(delay) }, `agent: ${what} failed; retrying`);
        await sleep(delay, this.stop.signal);
        if (this.stop.signal.aborted) throw e;
      }
    }
  }

  private fail(e: HallmarkError): void {
    if (this.removedBy) return;
    this.removedBy = e;
    this.o.log.error({ code: e.code }, `agent: serving stopped: ${e.message}`);
    for (const l of this.removedListeners) l(e);
    this.settleFailed(e);
  }

  private emitRenewed(): void {
    for (const l of this.renewedListeners) l();
  }

  /** The stored SVID, when it is still valid now (the server may yet refuse it: see `call`). */
  private loadStored(): NodeSvid | undefined {
    const certPem = readIfExists(join(this.o.dataDir, "svid.pem"));
    // The stored SVID is reused only with the kind of key this agent was started for: a node
    // started with --tpm-key-resident attests again rather than go on with a software key.
    const keyText = readIfExists(join(this.o.dataDir, this.o.residentKeySigner ? "svid.tpmkey" : "svid.key"));
    const key: NodeKey | undefined = keyText === undefined ? undefined : this.o.residentKeySigner ? { tpmKeyFile: keyText } : { pem: keyText };
    if (!certPem || !key) return undefined;
    try {
      const svid = parseSvid(certPem, key, statSync(join(this.o.dataDir, "svid.pem")).mtime);
      if (svid.notAfter <= this.clock()) {
        this.o.log.warn({ spiffeId: svid.spiffeId, expiredAt: svid.notAfter.toISOString() }, "agent: the stored node SVID has expired");
        return undefined;
      }
      return svid;
    } catch (e) {
      this.o.log.warn({ detail: (e as Error).message }, "agent: the stored node SVID cannot be read; attesting again");
      return undefined;
    }
  }
}

/** The attestor this data directory's node attested with, if it did: a restart needs no attestation flag. */
export function storedAttestor(dataDir: string): string | undefined {
  return readJson<NodeRecordFile>(join(dataDir, "node.json"))?.attestor;
}

function parseSvid(certPem: string, key: NodeKey, receivedAt = new Date()): NodeSvid {
  const leaf = new X509Certificate(certPem);
  const uris = (leaf.subjectAltName ?? "").split(", ").filter((n) => n.startsWith("URI:"));
  if (uris.length !== 1) throw new HallmarkError("client_cert_invalid", "the stored node SVID must carry exactly one URI SAN");
  const spiffeId = SpiffeId.parse(uris[0]!.slice(4)).toString();
  const [notBefore, notAfter] = [new Date(leaf.validFrom), new Date(leaf.validTo)];
  return { spiffeId, certPem, key, notBefore, notAfter, receivedAt: new Date(Math.min(Math.max(receivedAt.getTime(), notBefore.getTime()), notAfter.getTime())) };
}

/** The data directory: created 0700, or tightened to 0700; a symlink or a file is refused. */
function prepareDataDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw agentError("agent_data_dir_unsafe", `--data-dir ${dir} is not a directory`);
  if (typeof process.getuid === "function" && st.uid !== process.getuid()) {
    throw agentError("agent_data_dir_unsafe", `--data-dir ${dir} belongs to another user (uid ${st.uid})`);
  }
  if ((st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
}

function readIfExists(path: string): string | undefined {
  return existsSync(path) ? readFileSync(path, "utf8") : undefined;
}

function readJson<T>(path: string): T | undefined {
  const text = readIfExists(path);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}
