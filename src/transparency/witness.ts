import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../client/files.js";
import { isHallmarkError } from "../errors.js";
import { parseCheckpoint } from "./checkpoint.js";
import type { CosignerKey } from "./cosignature.js";
import { tlogError } from "./errors.js";
import { EMPTY_TREE_HASH, verifyConsistency } from "./merkle.js";
import { type NoteVerifier, decodeStrictBase64, openNote, parseNote, signNote } from "./note.js";

/**
 * A witness (c2sp.org/tlog-witness, add-checkpoint): for each log it follows, it remembers the
 * latest checkpoint it cosigned and cosigns a new one only with a consistency proof from it. It
 * never cosigns two trees that are not consistent, which is what makes a split view visible.
 * State: one file per origin in the state directory, written atomically before answering; requests
 * are handled one at a time, so check-and-store is atomic (the spec's rollback race cannot happen).
 */

export interface WitnessAnswer {
  status: number;
  contentType: string;
  body: string;
}

/** The spec's bound on consistency proof lines. */
const MAX_PROOF_LINES = 63;
const SIZE_LINE = /^old (0|[1-9][0-9]{0,15})$/;
const TEXT = "text/plain; charset=utf-8";

export class Witness {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly logs = new Map<string, NoteVerifier[]>();

  constructor(
    private readonly cosigner: CosignerKey,
    logKeys: readonly NoteVerifier[],
    private readonly stateDir: string,
  ) {
    for (const k of logKeys) this.logs.set(k.name, [...(this.logs.get(k.name) ?? []), k]);
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  }

  /** POST add-checkpoint, one at a time. */
  addCheckpoint(body: string): Promise<WitnessAnswer> {
    const run = this.queue.then(() => this.addNow(body));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** GET <origin hash>/checkpoint: the last checkpoint cosigned for that log, log signature and cosignature included. */
  latest(originHash: string): WitnessAnswer {
    if (!/^[0-9a-f]{64}$/.test(originHash)) return refusal(404, "tlog_witness_unknown_log", "no such log");
    const file = join(this.stateDir, `${originHash}.checkpoint`);
    if (!existsSync(file)) return refusal(404, "tlog_witness_unknown_log", "this witness has not cosigned a checkpoint of that log");
    return { status: 200, contentType: TEXT, body: readFileSync(file, "utf8") };
  }

  private stateFile(origin: string): string {
    return join(this.stateDir, `${createHash("sha256").update(origin, "utf8").digest("hex")}.checkpoint`);
  }

  private async addNow(body: string): Promise<WitnessAnswer> {
    // 400: the request is not an add-checkpoint body.
    const split = body.indexOf("\n\n");
    if (split < 0) return refusal(400, "tlog_malformed_proof", "the body is an old size line, proof lines, a blank line and a checkpoint");
    const head = body.slice(0, split).split("\n");
    const sizeLine = SIZE_LINE.exec(head[0] ?? "");
    if (!sizeLine) return refusal(400, "tlog_malformed_proof", "the first line is 'old <size>'");
    const oldSize = Number(sizeLine[1]);
    const proofLines = head.slice(1);
    if (proofLines.length > MAX_PROOF_LINES) return refusal(400, "tlog_malformed_proof", `at most ${MAX_PROOF_LINES} proof lines`);
    const proof = proofLines.map((l) => decodeStrictBase64(l));
    if (proof.some((h) => !h || h.length !== 32)) return refusal(400, "tlog_malformed_proof", "a proof line is not base64 of 32 bytes");
    const signed = body.slice(split + 2);
    let origin: string;
    try {
      origin = parseCheckpoint(parseNote(signed).text).origin;
    } catch (e) {
      return refusal(400, isHallmarkError(e) ? e.code : "tlog_checkpoint_malformed", (e as Error).message);
    }
    // 404: a log this witness does not follow.
    const keys = this.logs.get(origin);
    if (!keys) return refusal(404, "tlog_witness_unknown_log", `this witness does not follow ${origin}`);
    // 403: no valid signature of the log (or a bad one from a known key).
    let opened;
    try {
      opened = openNote(signed, keys);
    } catch (e) {
      return refusal(403, "tlog_note_unverified", (e as Error).message);
    }
    const cp = parseCheckpoint(opened.text);
    if (oldSize > cp.treeSize) return refusal(400, "tlog_out_of_range", `old size ${oldSize} is larger than the checkpoint's ${cp.treeSize}`);
    // 409: the client's old size is not ours; we answer ours.
    const file = this.stateFile(origin);
    const stored = existsSync(file) ? this.readState(file, keys) : undefined;
    const ourSize = stored?.treeSize ?? 0;
    if (oldSize !== ourSize) return { status: 409, contentType: "text/x.tlog.size", body: `${ourSize}\n` };
    // 422: not consistent with what we cosigned.
    if (cp.treeSize === 0 && !cp.rootHash.equals(EMPTY_TREE_HASH)) return refusal(422, "tlog_checkpoint_inconsistent", "a checkpoint of size 0 has the empty tree's hash");
    if (oldSize === 0 && proof.length > 0) return refusal(422, "tlog_checkpoint_inconsistent", "a proof from size 0 is empty");
    if (stored) {
      try {
        verifyConsistency(stored.treeSize, cp.treeSize, stored.rootHash, cp.rootHash, proof as Buffer[]);
      } catch (e) {
        return refusal(422, "tlog_checkpoint_inconsistent", `not consistent with the checkpoint of size ${stored.treeSize} this witness cosigned: ${(e as Error).message}`);
      }
    }
    // Cosign, persist (log signatures it verified, and ours), then answer.
    const cosigned = await signNote(opened.text, [this.cosigner.signer]);
    const ourLine = cosigned.slice(opened.text.length + 1);
    const logLines = opened.verified.map((s) => {
      const id = Buffer.alloc(4);
      id.writeUInt32BE(s.keyId);
      return `\u2014 ${s.name} ${Buffer.concat([id, s.signature]).toString("base64")}\n`;
    });
    writeFileAtomic(file, `${opened.text}\n${logLines.join("")}${ourLine}`, 0o600);
    return { status: 200, contentType: TEXT, body: ourLine };
  }

  /** The stored checkpoint; a state file that does not verify is refused rather than overwritten. */
  private readState(file: string, keys: NoteVerifier[]) {
    try {
      return parseCheckpoint(openNote(readFileSync(file, "utf8"), [...keys, this.cosigner.verifier]).text);
    } catch (e) {
      throw tlogError("tlog_state_invalid", `the witness state ${file} does not verify: ${(e as Error).message}`, { cause: e });
    }
  }
}

function refusal(status: number, code: string, why: string): WitnessAnswer {
  return { status, contentType: TEXT, body: `${code}: ${why.split("\n")[0]}\n` };
}
