import { HallmarkError } from "../../errors.js";
import { ChangeFeed, type ProcessCoordination } from "../../store/change-feed.js";
import { type WorkerToPrimary, primaryMessage } from "./messages.js";

/** The worker's end of cluster's IPC channel (process.send / process.on("message") in a worker). */
export interface PrimaryChannel {
  send(message: WorkerToPrimary): boolean;
  onMessage(listener: (message: unknown) => void): void;
  onDisconnect(listener: () => void): void;
}

export function processChannel(): PrimaryChannel {
  if (!process.send) throw new Error("not a cluster worker: no IPC channel");
  return {
    send: (m) => process.send!(m),
    onMessage: (l) => void process.on("message", l),
    onDisconnect: (l) => void process.on("disconnect", l),
  };
}

/**
 * Store coordination for one worker of a `server.workers` group on SQLite: a committed write is
 * heard here at once and relayed through the primary to the other workers (which hear it like
 * their own); a lock is granted by the primary, one holder across the group at a time.
 */
export function workerCoordination(channel: PrimaryChannel): ProcessCoordination {
  const feed = new ChangeFeed();
  const waiting = new Map<number, { granted: () => void; lost: (e: Error) => void }>();
  let nextId = 1;
  let connected = true;
  channel.onMessage((raw) => {
    const m = primaryMessage(raw);
    if (m?.hallmark === "change") feed.emit(m.topic);
    else if (m?.hallmark === "granted") waiting.get(m.id)?.granted();
  });
  channel.onDisconnect(() => {
    connected = false;
    const lost = new HallmarkError("unavailable", "the server's primary process is gone");
    for (const w of waiting.values()) w.lost(lost);
    waiting.clear();
  });
  const send = (m: WorkerToPrimary) => {
    if (!connected) throw new HallmarkError("unavailable", "the server's primary process is gone");
    channel.send(m);
  };
  return {
    onChange: (topic, listener) => feed.on(topic, listener),
    announce(topic) {
      feed.emit(topic);
      // A write made while the primary is gone is committed all the same; this worker is about to stop.
      if (connected) channel.send({ hallmark: "announce", topic });
    },
    async exclusively<T>(name: string, body: () => Promise<T>): Promise<T> {
      const id = nextId++;
      await new Promise<void>((granted, lost) => {
        waiting.set(id, { granted, lost });
        try {
          send({ hallmark: "lock", name, id });
        } catch (e) {
          waiting.delete(id);
          lost(e);
        }
      });
      waiting.delete(id);
      try {
        return await body();
      } finally {
        if (connected) channel.send({ hallmark: "unlock", id });
      }
    },
  };
}
