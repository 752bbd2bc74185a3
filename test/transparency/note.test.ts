import { describe, expect, it } from "vitest";
import { generateKeyPairSync, sign as nodeSign } from "node:crypto";
import { formatCheckpoint, openCheckpoint, parseCheckpoint, signCheckpoint } from "../../src/transparency/checkpoint.js";
import {
  type NoteSigner,
  ed25519NoteVerifier,
  ed25519VerifierKey,
  noteKeyId,
  openNote,
  parseNote,
  parseVerifierKey,
  signNote,
} from "../../src/transparency/note.js";
import { thrownCode } from "../helpers/refusal.js";

/** A software Ed25519 NoteSigner: the HSM one is tested in test/hsm/ed25519.test.ts and the Go cross-check. */
function softwareSigner(name: string): NoteSigner & { vkey: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const v = ed25519NoteVerifier(name, publicKey);
  return { name, keyId: v.keyId, sign: async (m) => nodeSign(null, m, privateKey), vkey: ed25519VerifierKey(name, publicKey) };
}

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** The same base64 with the unused low bits of its last character set: decodes to the same bytes, but is not the canonical spelling. */
function withUnusedBitsSet(b64: string): string {
  const padded = b64.endsWith("==") ? 2 : b64.endsWith("=") ? 1 : 0;
  if (padded === 0) throw new Error("no unused bits without padding");
  const at = b64.length - padded - 1;
  const value = BASE64.indexOf(b64[at]!);
  return b64.slice(0, at) + BASE64[value | (padded === 1 ? 0b01 : 0b0001)]! + b64.slice(at + 1);
}

// c2sp.org/signed-note, "Verifier keys / Example": this key verifies this note.
const C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const C2SP_NOTE =
  "This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
// golang.org/x/mod/sumdb/note note_test.go (TestNewVerifier): a valid key, and two refused ones.
const GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_BAD_VKEYS = [
  "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==", // wrong key length, adjusted key hash
  "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", // unknown algorithm, adjusted key hash
];

describe("C2SP signed-note", () => {
  it("verifies the spec's example note with the spec's verifier key", () => {
    const v = parseVerifierKey(C2SP_VKEY);
    expect(v.keyId.toString(16)).toBe("530d903a");
    const opened = openNote(C2SP_NOTE, [v]);
    expect(opened.text).toBe("This is an example message.\n");
    expect(opened.verified.map((s) => s.name)).toEqual(["example.com/foo"]);
    expect(thrownCode(() => openNote(C2SP_NOTE.replace("example message", "example massage"), [v]))).toBe("tlog_note_unverified");
  });

  it("reads Go's verifier key (key ID = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]) and refuses Go's bad ones", () => {
    const v = parseVerifierKey(GO_VKEY);
    expect(v.name).toBe("PeterNeumann");
    const raw = Buffer.from("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "base64").subarray(1);
    expect(noteKeyId("PeterNeumann", 0x01, raw)).toBe(0xc74f20a3);
    for (const bad of GO_BAD_VKEYS) expect(thrownCode(() => parseVerifierKey(bad))).toBe("tlog_key_invalid");
    // Every truncation of a valid key is refused, as Go's test does.
    for (let i = 1; i < GO_VKEY.length; i++) expect(thrownCode(() => parseVerifierKey(GO_VKEY.slice(0, i))), GO_VKEY.slice(0, i)).toBe("tlog_key_invalid");
    for (const bad of ["PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"]) {
      expect(thrownCode(() => parseVerifierKey(bad))).toBe("tlog_key_invalid");
    }
  });

  it("round-trips our own signers through our verifier key strings (base64 with and without '+')", async () => {
    // Keep generating until both shapes are present (about one key in two has a '+' in its base64).
    const signers: Array<ReturnType<typeof softwareSigner>> = [];
    const hasPlus = (k: { vkey: string }) => k.vkey.split("+").length > 3;
    while (!(signers.some(hasPlus) && signers.some((k) => !hasPlus(k)))) signers.push(softwareSigner("log.example/a"));
    for (const k of signers) expect(openNote(await signNote("x\n", [k]), [parseVerifierKey(k.vkey)]).verified).toHaveLength(1);
    const s = signers[0]!;
    const note = await signNote("hello\n\nworld\n", [s]);
    const opened = openNote(note, [parseVerifierKey(s.vkey)]);
    expect(opened.text).toBe("hello\n\nworld\n");
  });

  it("ignores unknown signatures, refuses a bad known one, and refuses a note with no known one", async () => {
    const log = softwareSigner("log.example/a");
    const other = softwareSigner("witness.example/w");
    const sameName = softwareSigner("log.example/a");
    const note = await signNote("text\n", [log, other, sameName]);
    const logV = parseVerifierKey(log.vkey);
    expect(openNote(note, [logV]).verified).toHaveLength(1);
    expect(openNote(note, [logV, parseVerifierKey(other.vkey)]).verified).toHaveLength(2);
    const otherOnly = await signNote("text\n", [other]);
    expect(thrownCode(() => openNote(otherOnly, [logV]))).toBe("tlog_note_unverified");
    // The log's name and key ID over someone else's signature: a known key whose signature fails.
    const forged = await signNote("text\n", [{ name: log.name, keyId: log.keyId, sign: other.sign }]);
    expect(thrownCode(() => openNote(forged, [logV]))).toBe("tlog_note_unverified");
  });

  it("parses strictly: separators, dashes, control characters, UTF-8, base64 and bounds", async () => {
    const s = softwareSigner("log.example/a");
    const v = parseVerifierKey(s.vkey);
    const good = await signNote("a\nb\n", [s]);
    expect(openNote(good, [v]).text).toBe("a\nb\n");
    const sigLine = good.slice(good.indexOf("\u2014"));
    const b64 = sigLine.slice(sigLine.lastIndexOf(" ") + 1, -1);
    const malformed: Array<[string, string | Uint8Array]> = [
      ["CRLF line ends", good.replace(/\n/g, "\r\n")],
      ["no blank line", good.replace("\n\n", "\n")],
      ["no final newline", good.slice(0, -1)],
      ["hyphen instead of em dash", good.replace("\u2014", "-")],
      ["en dash instead of em dash", good.replace("\u2014", "\u2013")],
      ["two spaces after the dash", good.replace("\u2014 ", "\u2014  ")],
      ["trailing space", good.replace(/\n$/, " \n")],
      ["a tab in the text", good.replace("a\n", "a\t\n")],
      ["non-canonical base64 (unused bits set)", good.replace(b64, withUnusedBitsSet(b64))],
      ["base64 without padding", good.replace(b64, b64.replace(/=+$/, ""))],
      // Whatever the random signature holds: one character of the URL-safe alphabet in it.
      ["url-safe base64 (-)", good.replace(b64, `-${b64.slice(1)}`)],
      ["url-safe base64 (_)", good.replace(b64, `_${b64.slice(1)}`)],
      ["a lone surrogate", good.replace("a\n", "a\ud800\n")],
      ["invalid UTF-8", Buffer.concat([Buffer.from([0xff]), Buffer.from(good)])],
      ["too many signatures", "t\n\n" + sigLine.repeat(65)],
      ["too large", "t".repeat(300 * 1024) + "\n\n" + sigLine],
      ["an empty text", "\n" + sigLine],
    ];
    for (const [what, note] of malformed) expect(thrownCode(() => openNote(note, [v])), what).toBe("tlog_note_malformed");
    expect(parseNote("t\n\n" + sigLine.repeat(64)).signatures).toHaveLength(64);
  });
});

describe("C2SP tlog-checkpoint", () => {
  const root = Buffer.from("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", "hex");

  it("parses the spec's example checkpoint text and formats what it parses back to the same bytes", () => {
    const text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    const cp = parseCheckpoint(text);
    expect(cp).toMatchObject({ origin: "example.com/behind-the-sofa", treeSize: 20852163, extensions: [] });
    expect(formatCheckpoint(cp)).toBe(text);
    const withExtension = `${text}ext one\n`;
    expect(parseCheckpoint(withExtension).extensions).toEqual(["ext one"]);
    expect(formatCheckpoint(parseCheckpoint(withExtension))).toBe(withExtension);
  });

  it("refuses malformed checkpoint texts", () => {
    const r = root.toString("base64");
    const bad = [
      `o\n1\n${r}`,
      `o\n1\n`,
      `\n1\n${r}\n`,
      `o\n01\n${r}\n`,
      `o\n+1\n${r}\n`,
      `o\n1.0\n${r}\n`,
      `o\n 1\n${r}\n`,
      `o\n9007199254740993\n${r}\n`,
      `o\n1\n${root.subarray(1).toString("base64")}\n`,
      `o\n1\n${r.replace("=", "")}\n`,
      `o\n1\n${root.toString("hex")}\n`,
      `o\n1\n${r}\n\n`,
      `o\n1\n${r}\next\n\n`,
    ];
    for (const t of bad) expect(thrownCode(() => parseCheckpoint(t)), JSON.stringify(t)).toBe("tlog_checkpoint_malformed");
  });

  it("opens only with the log's own signature and origin; witnesses are extra", async () => {
    const log = softwareSigner("log.example/a");
    const witness = softwareSigner("witness.example/w");
    const cp = { origin: "log.example/a", treeSize: 1, rootHash: root, extensions: [] };
    const signed = await signCheckpoint(cp, log, [witness]);
    const opened = openCheckpoint(signed, parseVerifierKey(log.vkey), [parseVerifierKey(witness.vkey)]);
    expect(opened.checkpoint.treeSize).toBe(1);
    expect(opened.note.verified).toHaveLength(2);
    const witnessOnly = await signNote(formatCheckpoint(cp), [witness]);
    expect(thrownCode(() => openCheckpoint(witnessOnly, parseVerifierKey(log.vkey), [parseVerifierKey(witness.vkey)]))).toBe("tlog_note_unverified");
    await expect(signCheckpoint({ ...cp, origin: "elsewhere" }, log)).rejects.toMatchObject({ code: "tlog_key_invalid" });
    const otherOrigin = await signNote(formatCheckpoint({ ...cp, origin: "elsewhere" }), [log]);
    expect(thrownCode(() => openCheckpoint(otherOrigin, parseVerifierKey(log.vkey)))).toBe("tlog_checkpoint_malformed");
  });

  it("refuses every single-bit flip anywhere in a signed checkpoint (text, name, key ID, signature, separators)", async () => {
    const log = softwareSigner("log.example/a");
    const signed = Buffer.from(await signCheckpoint({ origin: "log.example/a", treeSize: 20852163, rootHash: root, extensions: [] }, log));
    const v = parseVerifierKey(log.vkey);
    expect(openCheckpoint(signed, v).checkpoint.treeSize).toBe(20852163);
    const outcomes = new Map<string, number>();
    let tried = 0;
    for (let i = 0; i < signed.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const m = Buffer.from(signed);
        m[i]! ^= 1 << bit;
        tried++;
        const c = thrownCode(() => openCheckpoint(m, v)) ?? "ACCEPTED";
        outcomes.set(c, (outcomes.get(c) ?? 0) + 1);
      }
    }
    expect(tried).toBe(signed.length * 8);
    expect(outcomes.get("ACCEPTED")).toBeUndefined();
    // The signature is checked before the text is read as a checkpoint: an edited text fails as unverified.
    expect([...outcomes.keys()].sort()).toEqual(["tlog_note_malformed", "tlog_note_unverified"]);
  });
});
