import { type KeyObject, createPrivateKey, createPublicKey, generateKeyPairSync, sign as nodeSign, verify as nodeVerify } from "node:crypto";
import { tlogError } from "./errors.js";
import {
  type NoteSigner,
  type NoteVerifier,
  SIGNATURE_TYPE_ED25519,
  decodeStrictBase64,
  ed25519PublicKeyFromRaw,
  ed25519RawPublicKey,
  isValidKeyName,
  noteKeyId,
  parseVerifierKey,
  splitVerifierKey,
} from "./note.js";

/**
 * C2SP tlog-cosignature (c2sp.org/tlog-cosignature), the Ed25519 type: a witness's note signature
 * on a checkpoint, `keyID ‖ u64 timestamp ‖ Ed25519 signature` over
 * "cosignature/v1\ntime <T>\n" followed by the checkpoint's note text. Key IDs use type 0x04,
 * so the same key can never be mistaken for a log key (type 0x01), and vice versa.
 */
export const SIGNATURE_TYPE_COSIGNATURE_V1 = 0x04;
const TIMESTAMP_SIZE = 8;
const ED25519_SIGNATURE_SIZE = 64;
/** The spec's bound: a timestamp fits in 63 bits. */
const MAX_TIMESTAMP = 2n ** 63n - 1n;
/** What `hallmark log witness-key` writes: the form of Go's sumdb/note signer keys, with type 0x04. */
const PRIVATE_KEY_PREFIX = "PRIVATE+KEY+";

/** The message a v1 cosignature at `timestamp` (POSIX seconds) signs. */
export function cosignedMessage(noteText: Uint8Array, timestamp: bigint): Buffer {
  return Buffer.concat([Buffer.from(`cosignature/v1\ntime ${timestamp}\n`, "utf8"), noteText]);
}

/** A cosigner's key: signs cosignatures, and says its verifier key string. */
export interface CosignerKey {
  signer: NoteSigner;
  verifier: NoteVerifier;
  /** `<name>+<key id>+<base64(0x04 ‖ public key)>`: what log clients trust. */
  verifierKey: string;
}

/** A NoteSigner of v1 cosignatures; `now` gives the timestamp (injected: tests fix it). */
export function cosignerFromPrivateKey(name: string, privateKey: KeyObject, now: () => Date = () => new Date()): CosignerKey {
  if (!isValidKeyName(name)) throw tlogError("tlog_key_invalid", "a cosigner name is non-empty, without spaces or '+'");
  const publicKey = createPublicKey(privateKey);
  const raw = ed25519RawPublicKey(publicKey);
  const keyId = noteKeyId(name, SIGNATURE_TYPE_COSIGNATURE_V1, raw);
  const signer: NoteSigner = {
    name,
    keyId,
    sign: async (text) => {
      const timestamp = BigInt(Math.floor(now().getTime() / 1000));
      const ts = Buffer.alloc(TIMESTAMP_SIZE);
      ts.writeBigUInt64BE(timestamp);
      return Buffer.concat([ts, nodeSign(null, cosignedMessage(text, timestamp), privateKey)]);
    },
  };
  return { signer, verifier: cosignatureVerifier(name, publicKey), verifierKey: `${name}+${hex8(keyId)}+${Buffer.concat([Buffer.from([SIGNATURE_TYPE_COSIGNATURE_V1]), raw]).toString("base64")}` };
}

/** Verifies v1 cosignatures of `name` with `publicKey` (the timestamp is covered, then ignored). */
export function cosignatureVerifier(name: string, publicKey: KeyObject): NoteVerifier {
  const raw = ed25519RawPublicKey(publicKey);
  return {
    name,
    keyId: noteKeyId(name, SIGNATURE_TYPE_COSIGNATURE_V1, raw),
    verify: (text, signature) => {
      if (signature.length !== TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE) return false;
      const timestamp = Buffer.from(signature).readBigUInt64BE(0);
      if (timestamp > MAX_TIMESTAMP) return false;
      return nodeVerify(null, cosignedMessage(text, timestamp), publicKey, signature.subarray(TIMESTAMP_SIZE));
    },
  };
}

/** The timestamp of a v1 cosignature (its first 8 bytes), for display. */
export function cosignatureTime(signature: Uint8Array): Date | undefined {
  if (signature.length !== TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE) return undefined;
  return new Date(Number(Buffer.from(signature).readBigUInt64BE(0)) * 1000);
}

/** A witness's verifier key string (type 0x04), strictly: its key ID must match. */
export function parseCosignerKey(vkey: string): NoteVerifier {
  const { name, keyId, type, key } = splitVerifierKey(vkey);
  if (type !== SIGNATURE_TYPE_COSIGNATURE_V1) throw tlogError("tlog_key_invalid", `a witness key has signature type 0x04 (tlog-cosignature v1), not 0x${type.toString(16)}`);
  const publicKey = ed25519PublicKeyFromRaw(key);
  if (noteKeyId(name, SIGNATURE_TYPE_COSIGNATURE_V1, key) !== keyId) throw tlogError("tlog_key_invalid", "the witness key's ID does not match its key");
  return cosignatureVerifier(name, publicKey);
}

/** A log key (0x01) or a witness key (0x04), by its type byte. */
export function parseAnyVerifierKey(vkey: string): NoteVerifier {
  return splitVerifierKey(vkey).type === SIGNATURE_TYPE_ED25519 ? parseVerifierKey(vkey) : parseCosignerKey(vkey);
}

/** A new cosigner key, as the key file holds it: `PRIVATE+KEY+<name>+<key id>+<base64(0x04 ‖ seed)>`. */
export function newCosignerKeyFile(name: string): string {
  if (!isValidKeyName(name)) throw tlogError("tlog_key_invalid", "a witness name is non-empty, without spaces or '+'");
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const seed = Buffer.from(privateKey.export({ format: "jwk" }).d!, "base64url");
  const keyId = noteKeyId(name, SIGNATURE_TYPE_COSIGNATURE_V1, ed25519RawPublicKey(publicKey));
  return `${PRIVATE_KEY_PREFIX}${name}+${hex8(keyId)}+${Buffer.concat([Buffer.from([SIGNATURE_TYPE_COSIGNATURE_V1]), seed]).toString("base64")}\n`;
}

/** Reads a cosigner key file's one line (see newCosignerKeyFile), checking its key ID. */
export function parseCosignerKeyFile(text: string, now?: () => Date): CosignerKey {
  const line = text.trim();
  if (!line.startsWith(PRIVATE_KEY_PREFIX)) throw tlogError("tlog_key_invalid", `a witness key file holds one line starting ${PRIVATE_KEY_PREFIX}`);
  const { name, keyId, type, key } = splitVerifierKey(line.slice(PRIVATE_KEY_PREFIX.length));
  if (type !== SIGNATURE_TYPE_COSIGNATURE_V1 || key.length !== 32) throw tlogError("tlog_key_invalid", "a witness key file holds type 0x04 and a 32-byte Ed25519 seed");
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, key]), format: "der", type: "pkcs8" });
  } catch (e) {
    throw tlogError("tlog_key_invalid", "the witness key file's seed is not an Ed25519 key", { cause: e });
  }
  const cosigner = cosignerFromPrivateKey(name, privateKey, now);
  if (cosigner.signer.keyId !== keyId) throw tlogError("tlog_key_invalid", "the witness key file's key ID does not match its key");
  return cosigner;
}

/** PKCS#8 DER of an Ed25519 private key, up to the 32-byte seed (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

const hex8 = (n: number) => n.toString(16).padStart(8, "0");

/** The signature lines of a note (what a witness answers add-checkpoint with), strictly. */
export function signatureLines(body: string): string[] {
  if (!body.endsWith("\n")) throw tlogError("tlog_note_malformed", "signature lines end with a newline");
  const lines = body.slice(0, -1).split("\n");
  for (const l of lines) {
    const parts = l.split(" ");
    if (parts.length !== 3 || parts[0] !== "\u2014" || !decodeStrictBase64(parts[2]!)) throw tlogError("tlog_note_malformed", "a signature line is '— <name> <base64>'");
  }
  return lines.map((l) => `${l}\n`);
}
