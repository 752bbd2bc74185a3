import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { Socket } from "node:net";
import { isHallmarkError } from "../errors.js";
import { shippedFile } from "../project-files.js";
import { workloadApiError } from "./errors.js";
import type { PeerCredentials } from "./ports.js";

/**
 * The kernel's word on who is at the other end of an accepted Unix socket, and the guard that the
 * process is still the same one when we answer it. Node has no API for SO_PEERCRED, so a small
 * N-API addon of our own (native/peercred, built by scripts/build-native) reads it.
 */

/** Peer credentials plus the process's start time, which pins the pid to one process. */
export interface ConnectedPeer extends PeerCredentials {
  /** Field 22 of /proc/<pid>/stat at accept time (clock ticks since boot), as the kernel printed it. */
  startTime: string;
}

interface PeercredAddon {
  peerCredentials(fd: number): PeerCredentials;
}

let addon: PeercredAddon | undefined;

function loadAddon(): PeercredAddon {
  if (addon) return addon;
  const path = shippedFile("native/peercred/build/Release/peercred.node");
  try {
    addon = createRequire(import.meta.url)(path) as PeercredAddon;
  } catch (e) {
    throw workloadApiError("peercred_addon_missing", "the peer credentials addon is not built; run scripts/build-native", {
      cause: e,
      internal: `cannot load ${path}`,
    });
  }
  return addon;
}

/** SO_PEERCRED of an accepted Unix socket (Linux: the fd is on the socket's libuv handle). */
export function peerCredentialsOf(socket: Socket): PeerCredentials {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) throw workloadApiError("workload_peer_unknown", "the connection has no file descriptor");
  try {
    return loadAddon().peerCredentials(fd);
  } catch (e) {
    if (isHallmarkError(e)) throw e;
    throw workloadApiError("workload_peer_unknown", "the kernel did not say who is calling", { cause: e });
  }
}

/**
 * Field 22 (starttime) of /proc/<pid>/stat, or undefined when there is no such process. The
 * command name (field 2) is in parentheses and may itself hold spaces and ')', so fields are
 * counted from the last ')'.
 */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state), so field 22 is rest[19].
  return rest[19];
}

/** Credentials of an accepted socket, with the start time that later proves the pid was not reused. */
export function connectedPeer(socket: Socket): ConnectedPeer {
  const creds = peerCredentialsOf(socket);
  const startTime = processStartTime(creds.pid);
  if (startTime === undefined) throw workloadApiError("workload_peer_changed", "the calling process has already exited");
  return { ...creds, startTime };
}

/** True while `pid` is still the process that started at `startTime` (not exited, not reused). */
export function isSameProcess(pid: number, startTime: string): boolean {
  return processStartTime(pid) === startTime;
}

/** Refuses (Unauthenticated on the socket) when the peer's pid no longer names the process that connected. */
export function assertSameProcess(peer: ConnectedPeer): void {
  if (!isSameProcess(peer.pid, peer.startTime)) {
    throw workloadApiError("workload_peer_changed", "the calling process is no longer the one that connected", {
      internal: `pid ${peer.pid} started at ${peer.startTime} is gone or reused`,
    });
  }
}
