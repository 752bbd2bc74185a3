import { tlogError } from "./errors.js";
import { HASH_SIZE, type HashReader } from "./merkle.js";

/**
 * The C2SP tlog-tiles layout (c2sp.org/tlog-tiles): the tree served as static, cacheable tiles of
 * 256 consecutive hashes. A tile at level L holds stored hashes of level 8·L, so every tile is a
 * slice of the stored subtree hashes (merkle.ts): tiles are derived, never a second source of truth.
 */

export const TILE_HEIGHT = 8;
export const TILE_WIDTH = 256;
/** Level bound of the spec ("between 0 and 63"). */
const MAX_LEVEL = 63;

/** A hash tile: `width` 256 is a full tile, 1..255 a partial one (`.p/<W>`). */
export interface TileId {
  level: number;
  index: number;
  width: number;
}

/** A parsed tile path: a hash tile, or an entry bundle (`tile/entries/<N>[.p/<W>]`). */
export type TilePath = ({ kind: "hashes" } & TileId) | { kind: "entries"; index: number; width: number };

/** N as zero-padded groups of three digits, all but the last prefixed by `x`: 1234067 → x001/x234/067. */
export function encodeTileIndex(n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw tlogError("tlog_out_of_range", "a tile index is a non-negative integer");
  const groups: string[] = [];
  do {
    groups.unshift(String(n % 1000).padStart(3, "0"));
    n = Math.floor(n / 1000);
  } while (n > 0);
  return groups.map((g, i) => (i < groups.length - 1 ? `x${g}` : g)).join("/");
}

function widthSuffix(width: number): string {
  if (!Number.isInteger(width) || width < 1 || width > TILE_WIDTH) throw tlogError("tlog_out_of_range", "a tile width is 1 to 256");
  return width === TILE_WIDTH ? "" : `.p/${width}`;
}

/** `tile/<L>/<N>[.p/<W>]`, relative to the log's prefix. */
export function tilePath(t: TileId): string {
  if (!Number.isInteger(t.level) || t.level < 0 || t.level > MAX_LEVEL) throw tlogError("tlog_out_of_range", "a tile level is 0 to 63");
  return `tile/${t.level}/${encodeTileIndex(t.index)}${widthSuffix(t.width)}`;
}

/** `tile/entries/<N>[.p/<W>]`, relative to the log's prefix. */
export function entryBundlePath(index: number, width: number): string {
  return `tile/entries/${encodeTileIndex(index)}${widthSuffix(width)}`;
}

const PATH = /^tile\/(entries|0|[1-9][0-9]?)\/((?:x[0-9]{3}\/)*[0-9]{3})(?:\.p\/([1-9][0-9]{0,2}))?$/;

/**
 * Parses a tile or entry-bundle path strictly: only the one canonical spelling of each tile is
 * accepted (no leading zero groups, no `.p/256`), so one resource never has two URLs.
 */
export function parseTilePath(path: string): TilePath {
  const m = PATH.exec(path);
  if (!m) throw tlogError("tlog_tile_invalid", "not a tile path");
  const index = Number(m[2]!.replace(/x|\//g, ""));
  const width = m[3] === undefined ? TILE_WIDTH : Number(m[3]);
  if (!Number.isSafeInteger(index) || (m[3] !== undefined && width >= TILE_WIDTH)) throw tlogError("tlog_tile_invalid", "not a tile path");
  if (m[1] !== "entries" && Number(m[1]) > MAX_LEVEL) throw tlogError("tlog_tile_invalid", "a tile level is 0 to 63");
  const parsed: TilePath =
    m[1] === "entries" ? { kind: "entries", index, width } : { kind: "hashes", level: Number(m[1]), index, width };
  const canonical = parsed.kind === "entries" ? entryBundlePath(index, width) : tilePath(parsed);
  if (canonical !== path) throw tlogError("tlog_tile_invalid", "not a canonical tile path");
  return parsed;
}

/** How many hashes a tree of `treeSize` leaves has at tile level `level` (stored level 8·L). */
function hashesAtLevel(treeSize: number, level: number): number {
  return Math.floor(treeSize / TILE_WIDTH ** level);
}

/**
 * Every tile of a tree of `treeSize` leaves: per level, the full tiles, then the partial tile
 * of width floor(s / 256^L) mod 256 when that is not zero (tlog-tiles "Partial Tiles").
 */
export function tilesForTreeSize(treeSize: number): TileId[] {
  const out: TileId[] = [];
  for (let level = 0; hashesAtLevel(treeSize, level) > 0; level++) {
    const count = hashesAtLevel(treeSize, level);
    const full = Math.floor(count / TILE_WIDTH);
    for (let index = 0; index < full; index++) out.push({ level, index, width: TILE_WIDTH });
    if (count % TILE_WIDTH > 0) out.push({ level, index: full, width: count % TILE_WIDTH });
  }
  return out;
}

/** Whether a tree of `treeSize` leaves has the tile `t` (full, or partial of exactly that width). */
export function tileExists(t: TileId, treeSize: number): boolean {
  const count = hashesAtLevel(treeSize, t.level);
  const full = Math.floor(count / TILE_WIDTH);
  if (t.index < full) return t.width === TILE_WIDTH;
  return t.index === full && t.width === count % TILE_WIDTH && t.width > 0;
}

/** The tile's bytes: its `width` hashes of stored level 8·L, read in one batch. */
export async function readTile(t: TileId, treeSize: number, reader: HashReader): Promise<Buffer> {
  if (!tileExists(t, treeSize)) throw tlogError("tlog_out_of_range", `a tree of size ${treeSize} has no tile ${tilePath(t)}`);
  const ids = Array.from({ length: t.width }, (_, i) => ({ level: t.level * TILE_HEIGHT, index: t.index * TILE_WIDTH + i }));
  return Buffer.concat(await reader.readHashes(ids));
}

/** The entries of bundle `index`: the leaves [index·256, index·256 + width). */
export function entryBundleRange(index: number, width: number): { start: number; end: number } {
  widthSuffix(width);
  return { start: index * TILE_WIDTH, end: index * TILE_WIDTH + width };
}

/** An entry bundle: each entry as a big-endian uint16 length, then its bytes. */
export function encodeEntryBundle(entries: readonly Uint8Array[]): Buffer {
  if (entries.length < 1 || entries.length > TILE_WIDTH) throw tlogError("tlog_tile_invalid", "an entry bundle holds 1 to 256 entries");
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (e.length > 0xffff) throw tlogError("tlog_tile_invalid", "an entry is at most 65535 bytes");
    const len = Buffer.alloc(2);
    len.writeUInt16BE(e.length);
    parts.push(len, Buffer.from(e));
  }
  return Buffer.concat(parts);
}

/** Decodes an entry bundle strictly: exactly `width` entries, nothing truncated, nothing trailing. */
export function decodeEntryBundle(bundle: Uint8Array, width: number): Buffer[] {
  const buf = Buffer.from(bundle.buffer, bundle.byteOffset, bundle.byteLength);
  const out: Buffer[] = [];
  let at = 0;
  while (at < buf.length) {
    if (at + 2 > buf.length) throw tlogError("tlog_tile_invalid", "an entry bundle is truncated");
    const len = buf.readUInt16BE(at);
    if (at + 2 + len > buf.length) throw tlogError("tlog_tile_invalid", "an entry bundle is truncated");
    out.push(Buffer.from(buf.subarray(at + 2, at + 2 + len)));
    at += 2 + len;
  }
  if (out.length !== width) throw tlogError("tlog_tile_invalid", `the entry bundle holds ${out.length} entries, not ${width}`);
  return out;
}

/** Splits a hash tile's bytes into its hashes, refusing a tile of the wrong length. */
export function splitTile(data: Uint8Array, width: number): Buffer[] {
  if (data.length !== width * HASH_SIZE) throw tlogError("tlog_tile_invalid", `a tile of width ${width} is ${width * HASH_SIZE} bytes`);
  return Array.from({ length: width }, (_, i) => Buffer.from(data.subarray(i * HASH_SIZE, (i + 1) * HASH_SIZE)));
}
