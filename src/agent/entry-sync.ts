import type { Logger } from "pino";
import type { NodeEntriesAnswer, NodeEntry } from "../client/node.js";
import { isHallmarkError } from "../errors.js";
import { Backoff, sleep } from "./backoff.js";
import { type NodeIdentity, isTransient } from "./node-identity.js";

/** The server holds a long poll at most this long (MAX_ENTRY_WAIT_SECONDS in src/api/public-routes.ts). */
const MAX_WAIT_SECONDS = 20;

export interface EntrySyncOptions {
  /**
   * Seconds between polls when nothing changes (default 5). Each poll is a long poll of that
   * length (at most 20 s): the server answers as soon as an entry of this node changes on any
   * replica, so changes arrive at once and the next poll follows straight away.
   */
  intervalSeconds?: number | undefined;
  retry?: { minMs: number; maxMs: number } | undefined;
  log: Logger;
}

/**
 * The registration entries this node is entitled to, kept in memory from GET /v1/node/entries:
 * a full list once (by pages), then only the changes since the last revision, every few
 * seconds. The server decides the entitlement; the agent only mirrors it. After a new
 * attestation the node's selectors may differ, so the next poll starts over with a full list.
 */
export class EntrySync {
  private entries_ = new Map<string, NodeEntry>();
  private revision: number | undefined;
  private readonly listeners = new Set<() => void>();
  private readonly stop = new AbortController();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly identity: NodeIdentity,
    private readonly o: EntrySyncOptions,
  ) {
    // A new node SVID may come from a new attestation with other selectors, hence other aliases:
    // the next poll starts over with a full list.
    this.unsubscribe = identity.onRenewed(() => (this.revision = undefined));
  }

  /** The entitled entries by id. */
  get entries(): ReadonlyMap<string, NodeEntry> {
    return this.entries_;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Polls once now (the first full list), then keeps polling in the background. */
  async start(): Promise<void> {
    await this.syncOnce().catch((e: unknown) => {
      if (!isTransient(e)) throw e;
      this.o.log.warn({ code: isHallmarkError(e) ? e.code : "error", detail: (e as Error).message }, "agent: first entry sync failed; retrying in the background");
    });
    void this.run();
  }

  /**
   * Stops polling. A long poll in flight is not waited for (it may be held for the whole wait):
   * its answer, when it comes, is dropped.
   */
  async close(): Promise<void> {
    this.stop.abort();
    this.unsubscribe();
  }

  /** One poll: the changes since the last revision (or a full list), applied; true when anything changed. */
  async syncOnce(longPoll = false): Promise<boolean> {
    let changed = false;
    let fullLists = 0;
    // Whole seconds, at least one: what the server accepts.
    const waitSeconds = Math.min(MAX_WAIT_SECONDS, Math.max(1, Math.round(this.o.intervalSeconds ?? 5)));
    let answer = await this.identity.call((c) => c.entries({ since: this.revision, waitSeconds: longPoll ? waitSeconds : undefined }));
    if (this.stop.signal.aborted) return false;
    for (;;) {
      // At most one full list per poll: a server that never continues cannot spin the agent.
      if (answer.full && fullLists++ === 0) {
        const { entries, revision } = await this.fullList(answer);
        changed = !sameEntries(this.entries_, entries) || changed;
        this.entries_ = entries;
        this.revision = revision;
        // Changes made while the pages were read: the revision was taken before the list.
        answer = await this.identity.call((c) => c.entries({ since: revision }));
        continue;
      }
      if (answer.full) break;
      for (const c of answer.changes) {
        if (c.op === "deleted") changed = this.entries_.delete(c.id) || changed;
        else if (!sameEntry(this.entries_.get(c.entry.id), c.entry)) {
          this.entries_.set(c.entry.id, c.entry);
          changed = true;
        }
      }
      this.revision = answer.revision;
      if (!answer.more) break;
      answer = await this.identity.call((c) => c.entries({ since: answer.revision }));
    }
    if (changed) for (const l of this.listeners) l();
    return changed;
  }

  private async fullList(first: Extract<NodeEntriesAnswer, { full: true }>): Promise<{ entries: Map<string, NodeEntry>; revision: number }> {
    const entries = new Map<string, NodeEntry>();
    let page = first;
    for (;;) {
      for (const e of page.entries) entries.set(e.id, e);
      if (!page.next_page) break;
      const next = await this.identity.call((c) => c.entries({ pageAfter: page.next_page }));
      if (!next.full) break;
      page = next;
    }
    return { entries, revision: first.revision };
  }

  private async run(): Promise<void> {
    const every = (this.o.intervalSeconds ?? 5) * 1000;
    const retry = this.o.retry ?? { minMs: 1000, maxMs: 30_000 };
    const backoff = new Backoff(retry.minMs, Math.max(retry.maxMs, every));
    // The first long poll starts at once: the poll itself waits while nothing changes.
    let delay = 0;
    while (!this.stop.signal.aborted && !this.identity.removed) {
      await sleep(delay, this.stop.signal);
      if (this.stop.signal.aborted || this.identity.removed) return;
      try {
        await this.syncOnce(true);
        backoff.reset();
        delay = 0;
      } catch (e) {
        if (this.identity.removed) return;
        delay = backoff.next();
        this.o.log.warn({ code: isHallmarkError(e) ? e.code : "error", detail: (e as Error).message, retryInMs: Math.round(delay) }, "agent: entry sync failed; retrying");
      }
    }
  }
}

function sameEntry(a: NodeEntry | undefined, b: NodeEntry): boolean {
  return a !== undefined && JSON.stringify(a) === JSON.stringify(b);
}

function sameEntries(a: ReadonlyMap<string, NodeEntry>, b: ReadonlyMap<string, NodeEntry>): boolean {
  if (a.size !== b.size) return false;
  for (const [id, e] of b) if (!sameEntry(a.get(id), e)) return false;
  return true;
}
