import { describe, expect, it } from "vitest";
import { MemoryHashStore, leafHash, treeHash } from "../../src/transparency/merkle.js";
import {
  decodeEntryBundle,
  encodeEntryBundle,
  encodeTileIndex,
  entryBundlePath,
  parseTilePath,
  readTile,
  splitTile,
  tilePath,
  tilesForTreeSize,
} from "../../src/transparency/tiles.js";
import { thrownCode } from "../helpers/refusal.js";

describe("C2SP tlog-tiles", () => {
  it("encodes tile indexes as the spec says (1234067 → x001/x234/067)", () => {
    expect(encodeTileIndex(1234067)).toBe("x001/x234/067");
    expect(encodeTileIndex(0)).toBe("000");
    expect(encodeTileIndex(999)).toBe("999");
    expect(encodeTileIndex(1000)).toBe("x001/000");
    expect(tilePath({ level: 0, index: 1234067, width: 256 })).toBe("tile/0/x001/x234/067");
    expect(tilePath({ level: 2, index: 5, width: 17 })).toBe("tile/2/005.p/17");
    expect(entryBundlePath(1234067, 3)).toBe("tile/entries/x001/x234/067.p/3");
  });

  it("parses canonical paths back, and refuses every other spelling", () => {
    for (const t of [
      { level: 0, index: 1234067, width: 256 },
      { level: 63, index: 0, width: 1 },
      { level: 1, index: 999_999_999, width: 255 },
    ]) {
      expect(parseTilePath(tilePath(t))).toEqual({ kind: "hashes", ...t });
    }
    expect(parseTilePath("tile/entries/x001/000.p/7")).toEqual({ kind: "entries", index: 1000, width: 7 });
    for (const bad of [
      "tile/0/x000/001",
      "tile/00/001",
      "tile/64/000",
      "tile/0/1",
      "tile/0/0001",
      "tile/0/001.p/256",
      "tile/0/001.p/0",
      "tile/0/001.p/07",
      "tile/0/x001",
      "tile/0/001/",
      "tile/entries/x001",
      "tile/8/0/001",
      "/tile/0/001",
      "tile/0/001.p/",
      "tile/data/001",
    ]) {
      expect(thrownCode(() => parseTilePath(bad)), bad).toBe("tlog_tile_invalid");
    }
  });

  it("lists the tiles of the spec's examples: sizes 70,000 and 256", () => {
    const tiles = tilesForTreeSize(70_000);
    const at = (level: number) => tiles.filter((t) => t.level === level);
    expect(at(0).filter((t) => t.width === 256)).toHaveLength(273);
    expect(at(0).filter((t) => t.width < 256).map((t) => t.width)).toEqual([112]);
    expect(at(1).map((t) => t.width)).toEqual([256, 17]);
    expect(at(2).map((t) => t.width)).toEqual([1]);
    expect(tiles).toHaveLength(273 + 1 + 2 + 1);
    expect(tilesForTreeSize(256)).toEqual([
      { level: 0, index: 0, width: 256 },
      { level: 1, index: 0, width: 1 },
    ]);
    expect(tilesForTreeSize(0)).toEqual([]);
  });

  it("tile contents are the leaf hashes at level 0 and the hashes of full level-0 tiles at level 1", async () => {
    const leaves = Array.from({ length: 600 }, (_, i) => leafHash(Buffer.from(`e${i}`)));
    const store = new MemoryHashStore();
    await store.appendLeafHashes(leaves);
    const t0 = splitTile(await readTile({ level: 0, index: 2, width: 88 }, 600, store), 88);
    expect(t0.map((h) => h.toString("hex"))).toEqual(leaves.slice(512, 600).map((h) => h.toString("hex")));
    const t1 = splitTile(await readTile({ level: 1, index: 0, width: 2 }, 600, store), 2);
    for (let i = 0; i < 2; i++) {
      // Each level-1 hash is MTH of one full level-0 tile: the tree hash of those 256 leaves on their own.
      const alone = new MemoryHashStore();
      await alone.appendLeafHashes(leaves.slice(i * 256, (i + 1) * 256));
      expect(t1[i]!.toString("hex")).toBe((await treeHash(256, alone)).toString("hex"));
    }
    await expect(readTile({ level: 0, index: 2, width: 89 }, 600, store)).rejects.toMatchObject({ code: "tlog_out_of_range" });
    await expect(readTile({ level: 0, index: 2, width: 256 }, 600, store)).rejects.toMatchObject({ code: "tlog_out_of_range" });
    await expect(readTile({ level: 1, index: 0, width: 3 }, 600, store)).rejects.toMatchObject({ code: "tlog_out_of_range" });
    expect(thrownCode(() => splitTile(Buffer.alloc(63), 2))).toBe("tlog_tile_invalid");
  });

  it("entry bundles: uint16 length prefixes, round trip, strict decoding", () => {
    const entries = [Buffer.alloc(0), Buffer.from("a"), Buffer.alloc(0xffff, 7)];
    const bundle = encodeEntryBundle(entries);
    expect(bundle.subarray(0, 5).toString("hex")).toBe("0000000161");
    expect(decodeEntryBundle(bundle, 3)).toEqual(entries);
    expect(thrownCode(() => decodeEntryBundle(bundle, 2))).toBe("tlog_tile_invalid");
    expect(thrownCode(() => decodeEntryBundle(bundle.subarray(0, -1), 3))).toBe("tlog_tile_invalid");
    expect(thrownCode(() => decodeEntryBundle(Buffer.concat([bundle, Buffer.from([0])]), 3))).toBe("tlog_tile_invalid");
    expect(thrownCode(() => encodeEntryBundle([Buffer.alloc(0x10000)]))).toBe("tlog_tile_invalid");
    expect(thrownCode(() => encodeEntryBundle([]))).toBe("tlog_tile_invalid");
  });
});
