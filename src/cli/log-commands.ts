import { X509Certificate, createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { writeFileAtomic } from "../client/files.js";
import { LogClient, type LogServerTls } from "../client/log-client.js";
import { RECEIPT_FILE, writeReceiptFile } from "../client/receipt-files.js";
import { parseDurationSeconds } from "../config/duration.js";
import { readInputText } from "../input-file.js";
import { createLogger } from "../log.js";
import pino from "pino";
import { pemBlocks } from "../pki/pem.js";
import { parseCosignerKey, parseCosignerKeyFile, newCosignerKeyFile } from "../transparency/cosignature.js";
import { tlogError } from "../transparency/errors.js";
import { verifyConsistency } from "../transparency/merkle.js";
import { type MonitorState, monitorStep, parseAuditEntry } from "../transparency/monitor.js";
import { parseVerifierKey } from "../transparency/note.js";
import { parseReceipt, verifyReceipt } from "../transparency/receipt.js";
import { type TrustPolicy, openTrustedCheckpoint } from "../transparency/trust-policy.js";
import { Witness } from "../transparency/witness.js";
import { type Command, type FlagSpec, type OptionSpec, UsageError, optionalString, requireString, stringList } from "./args.js";
import { readTrustBundle } from "./client-commands.js";

/**
 * The auditor's commands (README, Transparency log): they need a server URL (or a mirror of its
 * read API) and the log's key, never the database. Everything fetched is verified against the
 * key (and the witness policy) before it is believed.
 */

const LOG_SERVER: OptionSpec = {
  server: { type: "string", value: "URL", required: true, description: "the Hallmark server (https://HOST:PORT) or a mirror of its /log and /v1/log API (http:// or https://)" },
  "trust-bundle": {
    type: "string",
    value: "FILE",
    description: "PEM trust bundle the server's certificate must chain to (and then carry the server's SPIFFE ID)",
    default: "the system's roots, for a mirror with a Web PKI certificate",
  },
  "server-id": { type: "string", value: "ID", description: "with --trust-bundle: the SPIFFE ID the server's certificate must carry", default: "any /hallmark/server" },
};
const KEY: FlagSpec = { type: "string", value: "KEY", required: true, description: "the log's verifier key (<origin>+<key id>+<base64>, from 'hallmark log key'), or a file holding it" };
const POLICY: OptionSpec = {
  key: KEY,
  witness: { type: "string", multiple: true, value: "KEY", description: "a trusted witness's cosigner key (type 0x04, from 'hallmark log witness-key'), or a file holding it" },
  "witnesses-needed": { type: "string", value: "K", description: "how many of the --witness keys must have cosigned the checkpoint", default: "all the --witness keys given" },
};
const JSON_FLAG: FlagSpec = { type: "boolean", description: "print the result as JSON" };

/** A key given inline (`name+xxxxxxxx+base64`) or as a file holding one. */
function keyValue(v: string, flag: string): string {
  return /^[^\s+]+\+[0-9a-f]{8}\+\S+$/.test(v) ? v : readInputText(v, flag).trim();
}

function policyOf(v: Record<string, unknown>): TrustPolicy {
  const logKey = parseVerifierKey(keyValue(requireString(v, "key"), "--key"));
  const witnesses = stringList(v, "witness").map((w) => parseCosignerKey(keyValue(w, "--witness")));
  const raw = optionalString(v, "witnesses-needed");
  if (raw !== undefined && !/^(0|[1-9][0-9]{0,2})$/.test(raw)) throw new UsageError("--witnesses-needed is a number");
  const needed = raw === undefined ? witnesses.length : Number(raw);
  if (needed > witnesses.length) throw new UsageError(`--witnesses-needed ${needed} is more than the ${witnesses.length} --witness key(s) given`);
  return { logKey, witnesses, witnessesNeeded: needed };
}

function logServer(v: Record<string, unknown>): { url: string; tls: LogServerTls } {
  const raw = requireString(v, "server");
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--server '${raw}' is not a URL (e.g. https://127.0.0.1:8443)`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new UsageError("--server is an https:// (or a mirror's http://) URL");
  const bundle = optionalString(v, "trust-bundle");
  return { url: raw, tls: { trustBundlePem: bundle ? readTrustBundle(bundle) : undefined, serverId: optionalString(v, "server-id") } };
}

function logClient(v: Record<string, unknown>): LogClient {
  const { url, tls } = logServer(v);
  return new LogClient(url, tls);
}

const cosignersText = (names: readonly string[]) => (names.length ? `, cosigned by ${[...names].sort().join(", ")}` : "");

/** The receipt beside an SVID: the SVID PEM holds no log index, so its DIR/receipt.json says it. */
function receiptPathOf(v: Record<string, unknown>): { receipt: string; svid: string | undefined } {
  const receipt = optionalString(v, "receipt");
  const svid = optionalString(v, "svid");
  if (!receipt && !svid) throw new UsageError("give --receipt FILE, or --svid FILE with the receipt.json written beside it");
  return { receipt: receipt ?? join(dirname(svid!), RECEIPT_FILE), svid };
}

/** The receipt must be about this SVID: its leaf records the issuance of this serial to this SPIFFE ID. */
function checkReceiptIsAbout(svidPath: string, record: Record<string, unknown>): void {
  const [leaf] = pemBlocks(readInputText(svidPath, "--svid"));
  if (!leaf) throw tlogError("tlog_receipt_mismatch", `--svid ${svidPath} holds no certificate`);
  const cert = new X509Certificate(leaf);
  const serial = cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, "");
  const recorded = typeof record.serial === "string" ? record.serial.toLowerCase().replace(/^0+(?=.)/, "") : undefined;
  const uri = /URI:([^,\s]+)/.exec(cert.subjectAltName ?? "")?.[1];
  if (recorded !== serial || record.spiffeId !== uri || record.outcome !== "success") {
    throw tlogError("tlog_receipt_mismatch", `the receipt's leaf records ${String(record.event)} of serial ${recorded ?? "none"} to ${String(record.spiffeId)}, not this SVID (serial ${serial}, ${uri ?? "no URI SAN"})`);
  }
}

function readState(file: string): MonitorState | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const s = JSON.parse(readFileSync(file, "utf8")) as MonitorState;
    if (typeof s.checkpoint !== "string" || !Number.isSafeInteger(s.treeSize) || !Array.isArray(s.edge)) throw new Error("fields missing");
    return s;
  } catch (e) {
    throw tlogError("tlog_state_invalid", `--state ${file} is not a monitor state file: ${(e as Error).message}`);
  }
}

function durationFlag(v: Record<string, unknown>, name: string, fallback: string, allowZero = false): number {
  const raw = optionalString(v, name) ?? fallback;
  if (allowZero && raw.trim() === "0") return 0;
  const s = parseDurationSeconds(raw);
  if (s === undefined) throw new UsageError(`--${name} '${raw}' is not a duration (e.g. 20s, 1m)`);
  return s;
}

function listenFlag(v: Record<string, unknown>): { host: string; port: number } {
  const raw = requireString(v, "listen");
  const m = /^(.+):([0-9]{1,5})$/.exec(raw);
  if (!m || Number(m[2]) > 65535) throw new UsageError(`--listen '${raw}' is HOST:PORT (e.g. 127.0.0.1:7380)`);
  return { host: m[1]!.replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

export const logCommands: Command[] = [
  {
    name: "log key",
    summary: "print the transparency log's verifier key as the server serves it (compare it with one obtained out of band)",
    options: LOG_SERVER,
    async run(v) {
      console.log(await logClient(v).verifierKey());
      return 0;
    },
  },
  {
    name: "log checkpoint",
    summary: "fetch the log's latest signed checkpoint, verify it, and print it (the note, ready to keep for verify-consistency --from)",
    options: { ...LOG_SERVER, ...POLICY, key: { ...KEY, required: false, default: "the key the server serves at /log/key (checks the note's form, not who signed it)" }, json: JSON_FLAG },
    async run(v) {
      const log = logClient(v);
      const given = optionalString(v, "key");
      const policy = policyOf({ ...v, key: given ?? (await log.verifierKey()) });
      const note = await log.checkpoint();
      const { checkpoint: cp, cosigners } = openTrustedCheckpoint(note, policy);
      if (v.json) {
        console.log(JSON.stringify({ origin: cp.origin, tree_size: cp.treeSize, root_hash: cp.rootHash.toString("base64"), cosigners: cosigners.map((c) => c.name), checkpoint: note }, null, 2));
      } else {
        process.stdout.write(note);
        if (!given) console.error("warning: no --key: verified with the key the server itself serves");
      }
      return 0;
    },
  },
  {
    name: "log receipt",
    summary: "fetch the receipt (inclusion proof and signed checkpoint) of a log index and write it to FILE",
    options: {
      ...LOG_SERVER,
      index: { type: "string", value: "N", required: true, description: "the log_index an SVID or token answer carried" },
      out: { type: "string", value: "FILE", required: true, description: "where to write receipt.json (atomically)" },
      ...POLICY,
      key: { ...KEY, required: false, default: "none: written unverified (verify it with 'hallmark log verify-inclusion')" },
    },
    async run(v) {
      const raw = requireString(v, "index");
      if (!/^(0|[1-9][0-9]{0,15})$/.test(raw)) throw new UsageError("--index is a non-negative integer");
      const r = await logClient(v).receipt(Number(raw));
      if (!r) throw tlogError("tlog_not_covered", `no signed checkpoint covers log index ${raw} yet: try again after the next checkpoint`);
      if (optionalString(v, "key")) verifyReceipt(parseReceipt(JSON.stringify(r)), policyOf(v));
      const out = requireString(v, "out");
      writeReceiptFile(out, r);
      console.log(`receipt of log index ${r.index} (tree size ${r.tree_size}) written to ${out}`);
      return 0;
    },
  },
  {
    name: "log verify-inclusion",
    summary: "verify a receipt offline: its checkpoint under the key (and witness) policy, and the leaf's inclusion proof",
    options: {
      receipt: { type: "string", value: "FILE", description: "a receipt: receipt.json or C2SP tlog-proof text" },
      svid: { type: "string", value: "FILE", description: "an SVID (svid.pem): its receipt is the receipt.json beside it, and must record this very SVID's issuance" },
      ...POLICY,
      json: JSON_FLAG,
    },
    async run(v) {
      const { receipt, svid } = receiptPathOf(v);
      const policy = policyOf(v);
      const verified = verifyReceipt(parseReceipt(readInputText(receipt, svid && !optionalString(v, "receipt") ? "the receipt beside --svid" : "--receipt")), policy);
      const { body } = parseAuditEntry(verified.entry, verified.index);
      if (svid) checkReceiptIsAbout(svid, body);
      const summary = {
        index: verified.index,
        origin: verified.checkpoint.origin,
        tree_size: verified.checkpoint.treeSize,
        cosigners: verified.cosigners.map((c) => c.name),
        record: body,
      };
      console.log(
        v.json
          ? JSON.stringify(summary, null, 2)
          : `ok: leaf ${verified.index} (${String(body.event)} ${String(body.outcome)}${body.spiffeId ? ` ${String(body.spiffeId)}` : ""}${body.serial ? ` serial ${String(body.serial)}` : ""}) is in ${verified.checkpoint.origin} at tree size ${verified.checkpoint.treeSize}${cosignersText(summary.cosigners)}`,
      );
      return 0;
    },
  },
  {
    name: "log verify-consistency",
    summary: "verify that the log's current checkpoint extends an older one you kept (no fork, no rollback)",
    options: {
      from: { type: "string", value: "FILE", required: true, description: "the older signed checkpoint (what 'hallmark log checkpoint' printed)" },
      ...LOG_SERVER,
      ...POLICY,
    },
    async run(v) {
      const policy = policyOf(v);
      const log = logClient(v);
      const old = openTrustedCheckpoint(readInputText(requireString(v, "from"), "--from"), { ...policy, witnessesNeeded: 0 }).checkpoint;
      const { checkpoint: now, cosigners } = openTrustedCheckpoint(await log.checkpoint(), policy);
      if (now.treeSize < old.treeSize) throw tlogError("tlog_checkpoint_inconsistent", `the log's tree shrank from ${old.treeSize} to ${now.treeSize} leaves (a rollback)`);
      try {
        verifyConsistency(old.treeSize, now.treeSize, old.rootHash, now.rootHash, await log.consistency(old.treeSize, now.treeSize));
      } catch (e) {
        throw tlogError("tlog_checkpoint_inconsistent", `the checkpoint of size ${now.treeSize} does not extend the one of size ${old.treeSize}: ${(e as Error).message}`, { cause: e });
      }
      console.log(`ok: tree size ${old.treeSize} -> ${now.treeSize} is consistent${cosignersText(cosigners.map((c) => c.name))}`);
      return 0;
    },
  },
  {
    name: "log monitor",
    summary: "follow the log: check every new checkpoint extends the last one seen and print each new leaf (index, time, event, outcome, SPIFFE ID, serial)",
    options: {
      ...LOG_SERVER,
      ...POLICY,
      state: { type: "string", value: "FILE", required: true, description: "where the monitor keeps what it has verified (written atomically; absent: start at leaf 0)" },
      once: { type: "boolean", description: "check once and exit (for cron and tests)" },
      interval: { type: "string", value: "DURATION", description: "how often to check", default: "10s" },
    },
    async run(v) {
      const policy = policyOf(v);
      const log = logClient(v);
      const stateFile = requireString(v, "state");
      const interval = durationFlag(v, "interval", "10s");
      let stopped = false;
      const stop = () => (stopped = true);
      process.once("SIGTERM", stop);
      process.once("SIGINT", stop);
      for (;;) {
        const before = readState(stateFile);
        const { state, leaves } = await monitorStep(log, policy, before);
        for (const l of leaves) console.log([l.index, l.time, l.event, l.outcome, l.spiffeId ?? "-", l.serial ?? "-"].join(" "));
        mkdirSync(dirname(stateFile), { recursive: true });
        writeFileAtomic(stateFile, `${JSON.stringify(state)}\n`, 0o600);
        if (v.once) {
          console.error(`checkpoint ${state.treeSize} verified${before ? ` (consistent with ${before.treeSize})` : ""}, ${leaves.length} new leaves`);
          return 0;
        }
        for (let waited = 0; waited < interval * 1000 && !stopped; waited += 200) await sleep(200);
        if (stopped) return 0;
      }
    },
  },
  {
    name: "log witness-key",
    summary: "make a witness's Ed25519 cosigner key (if --key-file is absent) and print its verifier key",
    options: {
      "key-file": { type: "string", value: "FILE", required: true, description: "the witness's private key (created 0600 when absent)" },
      name: { type: "string", value: "NAME", description: "the witness's name, e.g. witness.example.com/w1 (only when creating)", default: `${hostname()}/hallmark-witness` },
    },
    async run(v) {
      const file = requireString(v, "key-file");
      if (!existsSync(file)) {
        mkdirSync(dirname(file), { recursive: true });
        writeFileAtomic(file, newCosignerKeyFile(optionalString(v, "name") ?? `${hostname()}/hallmark-witness`), 0o600);
      } else if (optionalString(v, "name")) {
        throw new UsageError(`--key-file ${file} exists: its name is inside it (--name only names a new key)`);
      }
      console.log(parseCosignerKeyFile(readInputText(file, "--key-file")).verifierKey);
      return 0;
    },
  },
  {
    name: "log witness",
    summary: "run a witness (C2SP tlog-witness): cosign the logs' checkpoints that are consistent with those it cosigned before",
    options: {
      listen: { type: "string", value: "HOST:PORT", required: true, description: "where to serve POST /add-checkpoint and GET /<origin hash>/checkpoint (plain HTTP)" },
      "key-file": { type: "string", value: "FILE", required: true, description: "the witness's key ('hallmark log witness-key')" },
      "state-dir": { type: "string", value: "DIR", required: true, description: "the last checkpoint cosigned per log, one file each (0700)" },
      "log-key": { type: "string", multiple: true, value: "KEY", required: true, description: "a log to follow: its verifier key ('hallmark log key'), or a file holding it" },
      "log-level": { type: "string", value: "LEVEL", description: "trace, debug, info, warn or error (JSON lines on stderr)", default: "info" },
    },
    notes: () => ["The witness prints one line when it listens: 'witness <verifier key> listening on http://HOST:PORT'.", "It exits 0 on SIGTERM or SIGINT."],
    async run(v) {
      const cosigner = parseCosignerKeyFile(readInputText(requireString(v, "key-file"), "--key-file"));
      const logKeys = stringList(v, "log-key").map((k) => parseVerifierKey(keyValue(k, "--log-key")));
      const witness = new Witness(cosigner, logKeys, requireString(v, "state-dir"));
      const log = createLogger(optionalString(v, "log-level") ?? "info", pino.destination(2));
      const { startWitnessHttp } = await import("../api/witness-http.js");
      const http = await startWitnessHttp(witness, listenFlag(v), log);
      const host = listenFlag(v).host;
      console.log(`witness ${cosigner.verifierKey} listening on http://${host.includes(":") ? `[${host}]` : host}:${http.port}`);
      for (const k of logKeys) console.log(`following ${k.name} (state ${createHash("sha256").update(k.name).digest("hex")}.checkpoint)`);
      await new Promise<void>((resolve) => {
        process.once("SIGTERM", resolve);
        process.once("SIGINT", resolve);
      });
      await http.close();
      return 0;
    },
  },
];
