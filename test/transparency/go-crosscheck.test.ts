import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { openPkcs11KeyStore, type Pkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import { ensureSoftHsmToken } from "../../src/hsm/softhsm.js";
import { formatCheckpoint, signCheckpoint } from "../../src/transparency/checkpoint.js";
import { MemoryHashStore, consistencyProof, inclusionProof, leafHash, treeHash } from "../../src/transparency/merkle.js";
import { ed25519NoteSigner, ed25519VerifierKey } from "../../src/transparency/note.js";
import { readTile, tilePath, tilesForTreeSize } from "../../src/transparency/tiles.js";
import { buildGoTlogcheck, goTlogcheckMissing } from "../helpers/go-tlogcheck.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * The independent witness: Go's golang.org/x/mod/sumdb/tlog and sumdb/note (Debian's
 * golang-golang-x-mod-dev, x/mod 0.7.0) check our tree hashes, proofs, tiles and a checkpoint
 * signed by an Ed25519 key in SoftHSM2. The Go program (go/tlogcheck) is built once per run.
 */
const goMissing = goTlogcheckMissing();
if (goMissing) console.warn(`[go-crosscheck] skipped: ${goMissing}`);

const dir = tempDir("tlog-go");
const PIN = "1234-test";
let ks: Pkcs11KeyStore | undefined;
let binary: string;

beforeAll(() => {
  if (goMissing) return;
  binary = buildGoTlogcheck(dir.path);
});
afterAll(async () => {
  await ks?.close();
  dir.remove();
});

function runGo(input: unknown): { checked: Record<string, number>; failures: string[] } {
  const r = spawnSync(binary, [], { input: JSON.stringify(input), maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`tlogcheck failed: ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString()) as { checked: Record<string, number>; failures: string[] };
}

const b64 = (b: Buffer) => b.toString("base64");

describe.skipIf(goMissing !== undefined)("cross-check with Go's sumdb/tlog and sumdb/note", () => {
  it("tree hashes and every inclusion and consistency proof of small trees match tlog.TreeHash, CheckRecord and CheckTree", async () => {
    const leaves = Array.from({ length: 40 }, (_, i) => Buffer.from(`record ${i}\n`));
    const store = new MemoryHashStore();
    await store.appendLeafHashes(leaves.map(leafHash));
    const treeHashes = [];
    const inclusion = [];
    const consistency = [];
    for (let n = 1; n <= 40; n++) {
      treeHashes.push({ size: n, hash: b64(await treeHash(n, store)) });
      for (let i = 0; i < n; i++) inclusion.push({ index: i, size: n, proof: (await inclusionProof(i, n, store)).map(b64) });
      for (let m = 1; m <= n; m++) consistency.push({ first: m, second: n, proof: (await consistencyProof(m, n, store)).map(b64) });
    }
    const result = runGo({ leaves: leaves.map(b64), treeHashes, inclusion, consistency });
    expect(result.failures).toEqual([]);
    expect(result.checked).toEqual({ treeHash: 40, inclusion: (40 * 41) / 2, consistency: (40 * 41) / 2 });
  });

  it("our tiles at 70,000 leaves read through tlog.TileHashReader, proofs built from them pass CheckRecord/CheckTree, an edited tile is caught, and a checkpoint signed in SoftHSM2 opens with note.Open", async () => {
    const size = 70_000;
    const leaves = Array.from({ length: size }, (_, i) => Buffer.from(`entry ${i}`));
    const store = new MemoryHashStore();
    for (let at = 0; at < size; at += 4096) await store.appendLeafHashes(leaves.slice(at, at + 4096).map(leafHash));
    const root = await treeHash(size, store);
    const tileDir = join(dir.path, "tiles");
    const tamperedDir = join(dir.path, "tampered");
    const tamperedIndex = 300; // level-0 tile 1, position 44: the case the issue saw x/mod 0.7.0 hand back unchecked
    for (const t of tilesForTreeSize(size)) {
      const data = await readTile(t, size, store);
      for (const [base, bytes] of [
        [tileDir, data],
        [tamperedDir, t.level === 0 && t.index === 1 ? editHash(data, tamperedIndex - 256) : data],
      ] as const) {
        const path = join(base, tilePath(t));
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, bytes);
      }
    }
    // Sizes for Go's CheckTree of proofs built from tiles are Go's own tree hashes; ours are checked above.
    const { modulePath } = await ensureSoftHsmToken({ dir: join(dir.path, "hsm"), label: "tlog", pin: PIN, soPin: "5678-so" });
    ks = await openPkcs11KeyStore({ modulePath, tokenLabel: "tlog", pin: PIN, sessions: 1 });
    const key = await ks.generate("tlog-checkpoint-key", "ed25519");
    const origin = "hallmark.example/log";
    const checkpoint = { origin, treeSize: size, rootHash: root, extensions: [] };
    const signedNote = await signCheckpoint(checkpoint, ed25519NoteSigner(origin, key));
    const result = runGo({
      leaves: leaves.map(b64),
      treeHashes: [{ size, hash: b64(root) }],
      verifierKey: ed25519VerifierKey(origin, key.publicKey),
      signedNote,
      noteText: formatCheckpoint(checkpoint),
      tileDir,
      tileTreeSize: size,
      tileRoot: b64(root),
      tamperedTileDir: tamperedDir,
      tamperedIndex,
    });
    expect(result.failures).toEqual([]);
    const proofsFromTiles = Math.ceil(size / 997);
    let consistencySizes = 0;
    for (let m = 1; m < size; m = m * 3 + 1) consistencySizes++;
    expect(result.checked).toEqual({
      treeHash: 1,
      note: 1,
      tileTreeHash: 1,
      tileInclusion: proofsFromTiles,
      tileConsistency: consistencySizes,
      tamperedTileRefused: 1,
    });
  });
});

/** A copy of a tile with one byte of one hash flipped. */
function editHash(tile: Buffer, position: number): Buffer {
  const copy = Buffer.from(tile);
  copy[position * 32]! ^= 0x01;
  return copy;
}
