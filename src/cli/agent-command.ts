import { createProducer } from "../client/producers.js";
import { parseDurationSeconds } from "../config/duration.js";
import { createLogger } from "../log.js";
import { storedAttestor } from "../agent/node-identity.js";
import { type StartWorkloadApi, runAgent } from "../agent/run-agent.js";
import { DEFAULT_WORKLOAD_SOCKET } from "../workload-api/endpoint.js";
import type { WorkloadAttestor } from "../workload-api/ports.js";
import type { Logger } from "pino";
import { type Command, UsageError, optionalString, requireString } from "./args.js";
import { ATTESTATION_OPTIONS, SERVER_OPTIONS, producerOptions, readTrustBundle, serverList } from "./client-commands.js";

const DEFAULT_DATA_DIR = "/var/lib/hallmark-agent";

/** gRPC and the peer-credentials addon are loaded only when the agent runs: other commands start without them. */
async function loadWorkloadApi(discoverWorkloadPath: boolean, log: Logger): Promise<{ start: StartWorkloadApi; attestor: WorkloadAttestor }> {
  const [{ startWorkloadApi }, { unixWorkloadAttestor }] = await Promise.all([import("../workload-api/server.js"), import("../workload-api/unix-attestor.js")]);
  return { start: (o) => startWorkloadApi({ ...o, log }), attestor: unixWorkloadAttestor({ discoverWorkloadPath, log }) };
}

/** The TPM code is loaded only for a TPM-resident node key. */
async function tpmResidentSignerFor(tpm: string): Promise<(tpmKeyFile: string) => (message: Buffer) => Promise<Buffer>> {
  const { tpmResidentSigner } = await import("../attestors/tpm/resident-key.js");
  return (tpmKeyFile) => tpmResidentSigner(tpm, tpmKeyFile);
}

export const agentCommand: Command = {
  name: "agent",
  summary: "run the node agent: attest this node, keep its SVID fresh, serve the SPIFFE Workload API on a Unix socket",
  options: {
    ...SERVER_OPTIONS,
    "data-dir": {
      type: "string",
      value: "DIR",
      description: "where the node SVID (svid.pem, svid.key 0600), bundle.pem and node.json are kept (0700); a restart reuses the SVID, so a join token is needed only once",
      default: DEFAULT_DATA_DIR,
      env: "HALLMARK_AGENT_DATA_DIR",
    },
    socket: { type: "string", value: "PATH", description: "the Workload API's Unix socket (clients: SPIFFE_ENDPOINT_SOCKET=unix://PATH)", default: DEFAULT_WORKLOAD_SOCKET, env: "HALLMARK_AGENT_SOCKET" },
    "discover-workload-path": {
      type: "boolean",
      description: "also give workloads the selectors unix:path (the executable) and unix:sha256 (its digest; executables over 64 MiB get none)",
    },
    ...ATTESTATION_OPTIONS,
    "poll-interval": { type: "string", value: "DURATION", description: "how often the agent asks the server for changed entries and the bundle", default: "5s" },
    "log-level": { type: "string", value: "LEVEL", description: "trace, debug, info, warn or error (JSON lines on stdout)", default: "info", env: "HALLMARK_AGENT_LOG_LEVEL" },
  },
  notes: () => [
    "The agent exits 0 on SIGTERM or SIGINT, and 1 (after saying why) when it cannot serve any more:",
    "the node was evicted or banned, or a join-token node lost its SVID (a join token is used once).",
    "A restart needs no attestation flag: DIR/node.json remembers the attestor (a join token is never sent again).",
    "Hardware attestors attest again at half of the node SVID's life: give --evidence-cmd, as evidence",
    "made beforehand (--evidence-file) is bound to one nonce.",
    "With --attestor tpm --tpm-key-resident the node key never leaves the TPM (DIR holds svid.tpmkey, the",
    "TPM-wrapped blob, and no svid.key): node calls use TLS 1.3 and a proof signed in the TPM per connection.",
  ],
  async run(v) {
    const log = createLogger(optionalString(v, "log-level") ?? process.env.HALLMARK_AGENT_LOG_LEVEL ?? "info");
    const servers = serverList(v, (failed, answeredBy) => log.warn({ failed, answeredBy }, "agent: a server could not be reached; another answered"));
    const trustBundlePem = readTrustBundle(requireString(v, "trust-bundle"));
    const dataDir = optionalString(v, "data-dir") ?? process.env.HALLMARK_AGENT_DATA_DIR ?? DEFAULT_DATA_DIR;
    // A restart needs no attestation flag: node.json says how this node attested.
    const remembered = optionalString(v, "attestor") || optionalString(v, "join-token") ? undefined : storedAttestor(dataDir);
    const chosen = producerOptions(remembered ? { ...v, attestor: remembered } : v);
    // A TPM-resident node key cannot sign a TLS handshake: node calls carry proofs signed in the TPM.
    const residentKeySigner = chosen.tpmKeyResident && chosen.tpm ? await tpmResidentSignerFor(chosen.tpm) : undefined;
    const pollRaw = optionalString(v, "poll-interval") ?? "5s";
    const poll = parseDurationSeconds(pollRaw);
    if (poll === undefined || poll <= 0) throw new UsageError(`--poll-interval '${pollRaw}' is not a duration (e.g. 5s, 1m)`);
    const workloadApi = await loadWorkloadApi(v["discover-workload-path"] === true, log);
    const agent = await runAgent(
      {
        server: servers,
        serverId: optionalString(v, "server-id"),
        trustBundlePem,
        dataDir,
        socketPath: optionalString(v, "socket") ?? process.env.HALLMARK_AGENT_SOCKET ?? DEFAULT_WORKLOAD_SOCKET,
        attestor: chosen.attestor,
        producer: () => createProducer(chosen),
        residentKeySigner,
        pollIntervalSeconds: poll,
        log,
      },
      workloadApi,
    );
    const outcome = await new Promise<Error | undefined>((resolve) => {
      const stop = () => resolve(undefined);
      process.once("SIGTERM", stop);
      process.once("SIGINT", stop);
      void agent.failed.then(resolve);
    });
    await agent.close();
    log.info({ reason: outcome?.message ?? "signal" }, "agent: stopped");
    if (outcome) throw outcome;
    return 0;
  },
};
