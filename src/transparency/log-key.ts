import { createHash } from "node:crypto";
import { HallmarkError } from "../errors.js";
import type { KeyStore, Signer } from "../hsm/signer.js";
import { tlogError } from "./errors.js";
import { type NoteSigner, type NoteVerifier, ed25519NoteSigner, ed25519NoteVerifier, ed25519VerifierKey } from "./note.js";

/** The log's key: signs checkpoints, named by the origin (the contract: key name = origin line). */
export interface LogKey {
  signer: NoteSigner;
  verifier: NoteVerifier;
  /** `<origin>+<8 hex key ID>+<base64(0x01 ‖ public key)>`, what GET /log/key serves. */
  verifierKey: string;
  /** The HSM label it is found by. */
  label: string;
}

/**
 * The HSM label of the log key of `origin`. A fixed label per origin (no database record like the
 * CA keys have): the log key does not rotate, and a different origin is a different log with its
 * own key. The hash keeps the label short and free of the origin's slashes.
 */
export function logKeyLabel(origin: string): string {
  return `hallmark-log-${createHash("sha256").update(origin).digest("hex").slice(0, 16)}`;
}

/**
 * Finds the log's Ed25519 key in the HSM, or generates it there (non-extractable, sensitive, like
 * the CA keys) when the log has never signed. A log that has signed checkpoints and lost its key
 * must not quietly start a second history under a new key: tlog_key_missing.
 */
export async function openLogKey(keyStore: KeyStore, origin: string, hasSigned: boolean): Promise<LogKey> {
  const label = logKeyLabel(origin);
  let key = await keyStore.find(label, { recorded: hasSigned });
  if (!key) {
    if (hasSigned) throw tlogError("tlog_key_missing", `the log key '${label}' that signed this log's checkpoints is not in the HSM`);
    key = await generateOrFindMadeElsewhere(keyStore, label);
  }
  if (key.keyType !== "ed25519") throw tlogError("tlog_key_invalid", `the HSM key '${label}' is ${key.keyType}, not Ed25519`);
  return {
    signer: ed25519NoteSigner(origin, key),
    verifier: ed25519NoteVerifier(origin, key.publicKey),
    verifierKey: ed25519VerifierKey(origin, key.publicKey),
    label,
  };
}

/**
 * Generates the log key, unless another process made it since our lookup: a replica that made
 * it before signing anything leaves no record saying so, and a stale view of the token (see
 * reloadModule) may not have shown it. The keystore's existence check, run again on a fresh view,
 * then says hsm_key_exists, and the key found is the one to use: never a second key of one label.
 */
async function generateOrFindMadeElsewhere(keyStore: KeyStore, label: string): Promise<Signer> {
  try {
    return await keyStore.generate(label, "ed25519");
  } catch (e) {
    if (!(e instanceof HallmarkError) || e.code !== "hsm_key_exists") throw e;
    const made = await keyStore.find(label, { recorded: true });
    if (!made) throw e;
    return made;
  }
}
