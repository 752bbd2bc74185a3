import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { type FileHandle, open, readlink } from "node:fs/promises";
import type { Logger } from "pino";
import { workloadApiError } from "./errors.js";
import type { PeerCredentials, WorkloadAttestor } from "./ports.js";
import { etcAccounts, type UnixAccounts } from "./unix-accounts.js";

export interface UnixAttestorOptions {
  /** Adds `unix:path` (the executable) and `unix:sha256` (its digest), as SPIRE's `discover_workload_path`. */
  discoverWorkloadPath?: boolean;
  /** Executables larger than this many bytes get no `unix:sha256` selector (hashing is work a workload could make us do). */
  workloadSizeLimit?: number;
  accounts?: UnixAccounts;
  log?: Logger;
}

export const DEFAULT_WORKLOAD_SIZE_LIMIT = 64 * 1024 * 1024;

/** The `Uid:`/`Gid:` (real, effective, saved, fs) and `Groups:` lines of /proc/<pid>/status. */
interface ProcStatus {
  uids: number[];
  gids: number[];
  groups: number[];
}

function readProcStatus(pid: number): ProcStatus {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    throw workloadApiError("workload_peer_changed", "the calling process has exited");
  }
  const ids = (key: string): number[] => {
    const line = text.split("\n").find((l) => l.startsWith(`${key}:`));
    return line ? line.slice(key.length + 1).trim().split(/\s+/).filter(Boolean).map(Number) : [];
  };
  return { uids: ids("Uid"), gids: ids("Gid"), groups: ids("Groups") };
}

/**
 * Unix workload attestation with SPIRE's selector names (doc/plugin_agent_workloadattestor_unix.md).
 * The uid and gid are the kernel's SO_PEERCRED answer, the identity that connected; the
 * supplementary groups, the path and the digest can only be read from /proc now, so a process
 * whose effective ids no longer equal those it connected with (it changed user since) is refused
 * rather than described by a mix of two identities. The server re-checks the pid's start time
 * after this, before answering, so /proc was read from the process that connected.
 */
export function unixWorkloadAttestor(opts: UnixAttestorOptions = {}): WorkloadAttestor {
  const accounts = opts.accounts ?? etcAccounts();
  const sizeLimit = opts.workloadSizeLimit ?? DEFAULT_WORKLOAD_SIZE_LIMIT;
  return {
    async attest(peer: PeerCredentials): Promise<string[]> {
      const status = readProcStatus(peer.pid);
      if (status.uids[1] !== peer.uid || status.gids[1] !== peer.gid) {
        throw workloadApiError("workload_peer_changed", "the calling process changed its user or group after connecting", {
          internal: `peer ${peer.uid}:${peer.gid}, /proc/${peer.pid} now ${status.uids[1]}:${status.gids[1]}`,
        });
      }
      const selectors = [`unix:uid:${peer.uid}`];
      const user = accounts.userName(peer.uid);
      if (user !== undefined) selectors.push(`unix:user:${user}`);
      selectors.push(`unix:gid:${peer.gid}`);
      const group = accounts.groupName(peer.gid);
      if (group !== undefined) selectors.push(`unix:group:${group}`);
      for (const gid of status.groups) {
        selectors.push(`unix:supplementary_gid:${gid}`);
        const name = accounts.groupName(gid);
        if (name !== undefined) selectors.push(`unix:supplementary_group:${name}`);
      }
      if (opts.discoverWorkloadPath) selectors.push(...(await pathSelectors(peer.pid, sizeLimit, opts.log)));
      return selectors;
    },
  };
}

/**
 * `unix:path` from /proc/<pid>/exe, and `unix:sha256` of the file the process actually runs: it
 * is read through /proc/<pid>/exe itself, so a binary replaced on disk after exec is not hashed.
 */
async function pathSelectors(pid: number, sizeLimit: number, log: Logger | undefined): Promise<string[]> {
  let path: string;
  let file: FileHandle;
  try {
    path = await readlink(`/proc/${pid}/exe`);
    file = await open(`/proc/${pid}/exe`, "r");
  } catch (e) {
    // As SPIRE: with path discovery on, a workload whose path cannot be found is not attested.
    throw workloadApiError("workload_peer_unknown", "the calling process's executable cannot be read", { cause: e });
  }
  try {
    const size = (await file.stat()).size;
    if (size > sizeLimit) {
      log?.debug({ pid, path, size, sizeLimit }, "workload executable over the size limit: no unix:sha256 selector");
      return [`unix:path:${path}`];
    }
    const hash = createHash("sha256");
    // Asynchronous reads: hashing a large executable must not stall the other workloads' calls.
    for await (const chunk of file.createReadStream({ autoClose: false, highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
    return [`unix:path:${path}`, `unix:sha256:${hash.digest("hex")}`];
  } finally {
    await file.close();
  }
}
