import { type KeyObject, createHash, createPublicKey, verify as nodeVerify } from "node:crypto";
import type { Signer } from "../hsm/signer.js";
import { tlogError } from "./errors.js";

/**
 * C2SP signed-note (c2sp.org/signed-note): a text ending in a newline, a blank line, then one
 * signature line per key, `— <name> <base64(keyID ‖ signature)>` with the em dash U+2014.
 *
 * Only Ed25519 (signature type 0x01) is implemented. The spec also assigns 0x02 to ECDSA "as
 * implemented by github.com/transparency-dev/witness", with a key ID over the SPKI DER instead of
 * the rule below, but defines neither the signature encoding nor the hash: a log key that cannot
 * do Ed25519 needs that written down (from the witness code) before it can interoperate.
 */

export const SIGNATURE_TYPE_ED25519 = 0x01;
const ED25519_PUBLIC_KEY_SIZE = 32;
const ED25519_SIGNATURE_SIZE = 64;
/** Bounds on what we parse. The spec asks to accept at least 16 signatures (post-quantum ones near 5 kB). */
export const MAX_NOTE_BYTES = 256 * 1024;
export const MAX_NOTE_SIGNATURES = 64;
const EM_DASH_PREFIX = "\u2014 ";

/** Signs note texts; the HSM holds the key. `keyId` is the uint32 of the signature lines. */
export interface NoteSigner {
  readonly name: string;
  readonly keyId: number;
  sign(text: Uint8Array): Promise<Uint8Array>;
}

/** A trusted key: signatures whose name and key ID both match are verified with it. */
export interface NoteVerifier {
  readonly name: string;
  readonly keyId: number;
  verify(text: Uint8Array, signature: Uint8Array): boolean;
}

export interface NoteSignature {
  name: string;
  keyId: number;
  /** The signature without its 4-byte key ID prefix. */
  signature: Buffer;
}

export interface ParsedNote {
  /** The signed text, final newline included. */
  text: string;
  signatures: NoteSignature[];
}

export interface OpenedNote extends ParsedNote {
  /** The signatures a trusted key verified (at least one). */
  verified: NoteSignature[];
}

/** Key names: non-empty, no Unicode spaces, no "+" (they separate the parts of a verifier key). */
export function isValidKeyName(name: string): boolean {
  return name.length > 0 && !/[\s+]/u.test(name) && !hasControl(name);
}

function hasControl(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u0009\u000b-\u001f]/.test(s);
}

/** key ID = SHA-256(key name ‖ 0x0A ‖ signature type ‖ public key)[:4], big-endian. */
export function noteKeyId(name: string, type: number, publicKey: Uint8Array): number {
  return createHash("sha256").update(name, "utf8").update(Buffer.from([0x0a, type])).update(publicKey).digest().readUInt32BE(0);
}

/** Standard base64 (RFC 4648 §4), canonical only: padding present, unused bits zero. Undefined otherwise. */
export function decodeStrictBase64(s: string): Buffer | undefined {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return undefined;
  const b = Buffer.from(s, "base64");
  return b.toString("base64") === s ? b : undefined;
}

/** The 32-byte RFC 8032 encoding of an Ed25519 public key. */
export function ed25519RawPublicKey(key: KeyObject): Buffer {
  if (key.asymmetricKeyType !== "ed25519") throw tlogError("tlog_key_invalid", "the key is not an Ed25519 key");
  const der = key.export({ format: "der", type: "spki" });
  return Buffer.from(der.subarray(der.length - ED25519_PUBLIC_KEY_SIZE));
}

function ed25519KeyObject(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(raw).toString("base64url") }, format: "jwk" });
}

/** `<name>+<8 hex key ID>+<base64(type ‖ public key)>`, the form Go's sumdb/note reads. */
export function ed25519VerifierKey(name: string, publicKey: KeyObject): string {
  if (!isValidKeyName(name)) throw tlogError("tlog_key_invalid", "a note key name is non-empty, without spaces or '+'");
  const raw = ed25519RawPublicKey(publicKey);
  const id = noteKeyId(name, SIGNATURE_TYPE_ED25519, raw).toString(16).padStart(8, "0");
  return `${name}+${id}+${Buffer.concat([Buffer.from([SIGNATURE_TYPE_ED25519]), raw]).toString("base64")}`;
}

/** An Ed25519 verifier for `name` and a public key. */
export function ed25519NoteVerifier(name: string, publicKey: KeyObject): NoteVerifier {
  if (!isValidKeyName(name)) throw tlogError("tlog_key_invalid", "a note key name is non-empty, without spaces or '+'");
  const raw = ed25519RawPublicKey(publicKey);
  return {
    name,
    keyId: noteKeyId(name, SIGNATURE_TYPE_ED25519, raw),
    verify: (text, signature) => signature.length === ED25519_SIGNATURE_SIZE && nodeVerify(null, text, publicKey, signature),
  };
}

/** The parts of a verifier key string, checked except for what its signature type means. */
export interface VerifierKeyParts {
  name: string;
  keyId: number;
  /** The signature type byte: 0x01 a log's Ed25519 key, 0x04 an Ed25519 cosigner (tlog-cosignature). */
  type: number;
  /** The key material after the type byte. */
  key: Buffer;
}

/**
 * Splits a verifier key string `<name>+<8 hex key ID>+<base64(type ‖ key)>` strictly: three
 * parts, a valid name, eight lowercase hex digits, canonical base64 of at least a type byte.
 */
export function splitVerifierKey(vkey: string): VerifierKeyParts {
  // Names hold no "+", but base64 does: split at the first two only.
  const first = vkey.indexOf("+");
  const second = first < 0 ? -1 : vkey.indexOf("+", first + 1);
  if (second < 0) throw tlogError("tlog_key_invalid", "a verifier key is <name>+<key id>+<key>");
  const [name, idHex, keyB64] = [vkey.slice(0, first), vkey.slice(first + 1, second), vkey.slice(second + 1)];
  if (!isValidKeyName(name)) throw tlogError("tlog_key_invalid", "the verifier key's name is invalid");
  if (!/^[0-9a-f]{8}$/.test(idHex)) throw tlogError("tlog_key_invalid", "the verifier key's ID is not eight lowercase hex digits");
  const key = decodeStrictBase64(keyB64);
  if (!key || key.length < 1) throw tlogError("tlog_key_invalid", "the verifier key's key is not base64");
  return { name, keyId: parseInt(idHex, 16), type: key[0]!, key: Buffer.from(key.subarray(1)) };
}

/** An Ed25519 public key object from its 32 raw bytes (tlog_key_invalid if not a point). */
export function ed25519PublicKeyFromRaw(raw: Uint8Array): KeyObject {
  if (raw.length !== ED25519_PUBLIC_KEY_SIZE) throw tlogError("tlog_key_invalid", "an Ed25519 verifier key holds 32 bytes");
  try {
    return ed25519KeyObject(raw);
  } catch (e) {
    throw tlogError("tlog_key_invalid", "the verifier key is not an Ed25519 point", { cause: e });
  }
}

/**
 * Parses a log's verifier key string strictly: the parts as splitVerifierKey checks them,
 * signature type 0x01 with 32 bytes, and the key ID the key material gives.
 */
export function parseVerifierKey(vkey: string): NoteVerifier {
  const { name, keyId, type, key } = splitVerifierKey(vkey);
  if (type !== SIGNATURE_TYPE_ED25519) throw tlogError("tlog_key_invalid", `signature type 0x${type.toString(16)} is not supported here (only Ed25519, 0x01)`);
  const publicKey = ed25519PublicKeyFromRaw(key);
  if (noteKeyId(name, SIGNATURE_TYPE_ED25519, key) !== keyId) throw tlogError("tlog_key_invalid", "the verifier key's ID does not match its key");
  return ed25519NoteVerifier(name, publicKey);
}

/** A NoteSigner over an Ed25519 key held by the HSM (or any Signer of key type ed25519). */
export function ed25519NoteSigner(name: string, signer: Signer): NoteSigner {
  if (signer.keyType !== "ed25519") throw tlogError("tlog_key_invalid", `a note signer needs an Ed25519 key, not ${signer.keyType}`);
  const verifier = ed25519NoteVerifier(name, signer.publicKey);
  return { name, keyId: verifier.keyId, sign: (text) => signer.sign(text, "ed25519") };
}

function assertNoteText(text: string): void {
  if (text.length === 0 || !text.endsWith("\n")) throw tlogError("tlog_note_malformed", "a note text ends with a newline");
  if (hasControl(text)) throw tlogError("tlog_note_malformed", "a note holds no control characters but newline");
}

/** Signs `text` with each signer, in order: the signed note. */
export async function signNote(text: string, signers: readonly NoteSigner[]): Promise<string> {
  assertNoteText(text);
  if (signers.length === 0) throw tlogError("tlog_note_malformed", "a note carries at least one signature");
  const message = Buffer.from(text, "utf8");
  const lines: string[] = [];
  for (const s of signers) {
    if (!isValidKeyName(s.name)) throw tlogError("tlog_key_invalid", "a note key name is non-empty, without spaces or '+'");
    const sig = Buffer.from(await s.sign(message));
    const id = Buffer.alloc(4);
    id.writeUInt32BE(s.keyId);
    lines.push(`${EM_DASH_PREFIX}${s.name} ${Buffer.concat([id, sig]).toString("base64")}\n`);
  }
  return `${text}\n${lines.join("")}`;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Parses a signed note without verifying it: valid UTF-8, bounded size, no control characters
 * but newline, text and signatures split at the last blank line, every signature line exact.
 */
export function parseNote(note: string | Uint8Array): ParsedNote {
  // A string is checked as the bytes it stands for: a lone surrogate has no UTF-8 encoding.
  if (typeof note === "string" && Buffer.from(note, "utf8").toString("utf8") !== note) throw tlogError("tlog_note_malformed", "the note is not UTF-8");
  const bytes = typeof note === "string" ? Buffer.from(note, "utf8") : note;
  if (bytes.length > MAX_NOTE_BYTES) throw tlogError("tlog_note_malformed", "the note is too large");
  let s: string;
  try {
    s = UTF8.decode(bytes);
  } catch {
    throw tlogError("tlog_note_malformed", "the note is not UTF-8");
  }
  if (hasControl(s)) throw tlogError("tlog_note_malformed", "a note holds no control characters but newline");
  const split = s.lastIndexOf("\n\n");
  if (split < 0) throw tlogError("tlog_note_malformed", "a note has a blank line before its signatures");
  const text = s.slice(0, split + 1);
  const block = s.slice(split + 2);
  if (text.length === 0 || !block.endsWith("\n")) throw tlogError("tlog_note_malformed", "a note's text and signatures each end with a newline");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_NOTE_SIGNATURES) throw tlogError("tlog_note_malformed", `a note carries at most ${MAX_NOTE_SIGNATURES} signatures`);
  const signatures = lines.map((line) => {
    if (!line.startsWith(EM_DASH_PREFIX)) throw tlogError("tlog_note_malformed", "a signature line starts with an em dash and a space");
    const rest = line.slice(EM_DASH_PREFIX.length);
    const space = rest.indexOf(" ");
    const name = rest.slice(0, space);
    const b64 = rest.slice(space + 1);
    if (space < 0 || !isValidKeyName(name)) throw tlogError("tlog_note_malformed", "a signature line names a valid key");
    const raw = decodeStrictBase64(b64);
    if (!raw || raw.length < 5) throw tlogError("tlog_note_malformed", "a signature is canonical base64 of a key ID and a signature");
    return { name, keyId: raw.readUInt32BE(0), signature: Buffer.from(raw.subarray(4)) };
  });
  return { text, signatures };
}

/**
 * Opens a signed note as the spec says: signatures from unknown keys (name or ID differ) are
 * ignored; every signature from a known key must verify, or the whole note is refused; and at
 * least one must, or the note is refused (tlog_note_unverified).
 */
export function openNote(note: string | Uint8Array, verifiers: readonly NoteVerifier[]): OpenedNote {
  const parsed = parseNote(note);
  const message = Buffer.from(parsed.text, "utf8");
  const verified: NoteSignature[] = [];
  for (const sig of parsed.signatures) {
    const v = verifiers.find((k) => k.name === sig.name && k.keyId === sig.keyId);
    if (!v) continue;
    if (!v.verify(message, sig.signature)) throw tlogError("tlog_note_unverified", `the signature of ${sig.name} does not verify`);
    verified.push(sig);
  }
  if (verified.length === 0) throw tlogError("tlog_note_unverified", "the note carries no signature from a trusted key");
  return { ...parsed, verified };
}
