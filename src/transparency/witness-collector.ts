import type { Logger } from "pino";
import type { TlogSignedCheckpoint } from "../store/types.js";
import { parseCosignerKey, signatureLines } from "./cosignature.js";
import type { NoteVerifier } from "./note.js";
import { openNote } from "./note.js";

/** One configured witness: its add-checkpoint URL prefix and its cosigner key. */
export interface WitnessTarget {
  url: string;
  key: string;
}

/** The HTTP port: one POST, bounded in time by the implementation. */
export type WitnessPost = (url: string, body: string) => Promise<{ status: number; body: string }>;

/** Consistency proofs from the stored tree (TransparencyReader.consistency). */
export type ConsistencyProver = (first: number, second: number) => Promise<Buffer[]>;

interface WitnessSlot {
  target: WitnessTarget;
  verifier: NoteVerifier;
  /** The size this witness last cosigned, as far as we know (0 at start: a 409 tells us). */
  size: number;
  busy: boolean;
}

/**
 * Collects witness cosignatures (c2sp.org/tlog-witness, the client side) on the server's
 * checkpoints: each new checkpoint is submitted to every witness with a consistency proof from
 * the size that witness last cosigned, in the background, never blocking issuance or signing; a
 * witness busy with an earlier submission is skipped until the next. The cosignatures of the
 * latest checkpoint are kept in memory and served appended to it (a note with several
 * signatures); after a restart the current checkpoint is submitted again, and a witness that
 * already cosigned it cosigns it again (same size, same root).
 */
export class WitnessCollector {
  private readonly slots: WitnessSlot[];
  /** The checkpoint whose cosignatures are held, and the lines by witness. */
  private current: { text: string; lines: Map<string, string> } | undefined;

  constructor(
    targets: readonly WitnessTarget[],
    private readonly post: WitnessPost,
    private readonly prove: ConsistencyProver,
    private readonly log: Logger,
  ) {
    this.slots = targets.map((target) => ({ target, verifier: parseCosignerKey(target.key), size: 0, busy: false }));
  }

  get enabled(): boolean {
    return this.slots.length > 0;
  }

  /** The checkpoint as served: the stored note, plus the cosignatures held for exactly it. */
  cosigned(cp: TlogSignedCheckpoint): string {
    if (!this.current || this.current.text !== cp.text || this.current.lines.size === 0) return cp.text;
    return cp.text + [...this.current.lines.values()].join("");
  }

  /** Submits `cp` to every idle witness (fire and forget); resolves when these submissions end (tests, shutdown). */
  submit(cp: TlogSignedCheckpoint): Promise<void> {
    if (this.current?.text !== cp.text) this.current = { text: cp.text, lines: new Map() };
    const held = this.current;
    return Promise.all(this.slots.filter((s) => !s.busy && !held.lines.has(s.verifier.name)).map((s) => this.submitTo(s, cp, held))).then(() => undefined);
  }

  private async submitTo(slot: WitnessSlot, cp: TlogSignedCheckpoint, held: { text: string; lines: Map<string, string> }): Promise<void> {
    slot.busy = true;
    try {
      // At most twice: a 409 tells the size the witness has, and the second try proves from it.
      for (let attempt = 0; attempt < 2; attempt++) {
        const old = slot.size <= cp.treeSize ? slot.size : 0;
        const proof = old === 0 ? [] : await this.prove(old, cp.treeSize);
        const body = [`old ${old}`, ...proof.map((h) => h.toString("base64")), "", cp.text].join("\n");
        const answer = await this.post(`${slot.target.url.replace(/\/$/, "")}/add-checkpoint`, body);
        if (answer.status === 409 && /^(0|[1-9][0-9]*)\n$/.test(answer.body) && Number(answer.body) !== old) {
          const theirs = Number(answer.body);
          if (theirs > cp.treeSize) {
            this.log.error({ witness: slot.verifier.name, theirs, ours: cp.treeSize }, "transparency log: a witness has cosigned a larger tree of this log than the server has: split view or lost data");
            return;
          }
          slot.size = theirs;
          continue;
        }
        if (answer.status !== 200) {
          this.log.warn({ witness: slot.verifier.name, status: answer.status, answer: answer.body.split("\n")[0]!.slice(0, 200) }, "transparency log: a witness refused the checkpoint");
          return;
        }
        // Only a line that verifies with this witness's key is kept (and served).
        const line = signatureLines(answer.body).find((l) => {
          try {
            openNote(`${cp.text.slice(0, cp.text.lastIndexOf("\n\n") + 1)}\n${l}`, [slot.verifier]);
            return true;
          } catch {
            return false;
          }
        });
        if (!line) {
          this.log.warn({ witness: slot.verifier.name }, "transparency log: a witness answered no cosignature that verifies with its key");
          return;
        }
        slot.size = cp.treeSize;
        if (this.current === held) held.lines.set(slot.verifier.name, line);
        return;
      }
    } catch (e) {
      this.log.warn({ witness: slot.verifier.name, err: (e as Error).message }, "transparency log: a witness could not be reached");
    } finally {
      slot.busy = false;
    }
  }
}
