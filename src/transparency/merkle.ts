import { createHash } from "node:crypto";
import { tlogError } from "./errors.js";

/**
 * The Merkle tree of RFC 9162 §2.1 (the tree of RFC 6962, kept in v2): SHA-256, leaf hash
 * SHA-256(0x00 ‖ entry), node hash SHA-256(0x01 ‖ left ‖ right).
 *
 * Storage follows the "stored hashes" design of golang.org/x/mod/sumdb/tlog: the log keeps the
 * hash of every complete, aligned subtree (level L, index i: leaves [i·2^L, (i+1)·2^L)), and
 * every tree hash or proof is a fold of at most 2·log2(n) of them. Appending a leaf adds one hash
 * per level it completes. Generation reads them through a HashReader port, so the hashes can
 * live in the datastore (and tiles are just slices of them); verification needs no storage.
 *
 * Indexes and sizes are JS numbers (exact up to 2^53): never 32-bit bit operations on them.
 */

export const HASH_SIZE = 32;
/** Deeper than any tree of 2^53 leaves: a longer proof is malformed before any hashing. */
const MAX_PROOF_LENGTH = 64;

/** MTH({}) = SHA-256() (RFC 9162 §2.1.1): the root of the empty tree. */
export const EMPTY_TREE_HASH: Buffer = createHash("sha256").digest();

const LEAF_PREFIX = Buffer.from([0x00]);
const NODE_PREFIX = Buffer.from([0x01]);

export function leafHash(entry: Uint8Array): Buffer {
  return createHash("sha256").update(LEAF_PREFIX).update(entry).digest();
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return createHash("sha256").update(NODE_PREFIX).update(left).update(right).digest();
}

/** A complete, aligned subtree: `level` L and `index` i cover leaves [i·2^L, (i+1)·2^L). */
export interface SubtreeId {
  level: number;
  index: number;
}

export interface StoredHash extends SubtreeId {
  hash: Buffer;
}

/**
 * The port to the stored subtree hashes. One batched, asynchronous read per tree hash or proof,
 * so a SQL store answers with one query. A missing hash is tlog_hash_missing.
 */
export interface HashReader {
  readHashes(ids: readonly SubtreeId[]): Promise<Buffer[]>;
}

/** The largest power of two strictly less than n (n ≥ 2): the split point k of RFC 9162 §2.1.1. */
export function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/**
 * The stored subtrees whose hashes fold into MTH(D[lo:hi]), largest first. `lo` must be a
 * multiple of the smallest power of two ≥ hi−lo, which holds for every range the recursion of
 * RFC 9162 §2.1 visits; the fold of the chunks right to left then equals MTH.
 */
function cover(lo: number, hi: number): SubtreeId[] {
  const ids: SubtreeId[] = [];
  while (lo < hi) {
    let size = 1;
    let level = 0;
    while (size * 2 <= hi - lo && lo % (size * 2) === 0) {
      size *= 2;
      level++;
    }
    ids.push({ level, index: lo / size });
    lo += size;
  }
  return ids;
}

type Range = readonly [lo: number, hi: number];

/** MTH of each range, with one batched read of every stored hash the ranges need. */
async function rangeHashes(ranges: readonly Range[], reader: HashReader): Promise<Buffer[]> {
  const covers = ranges.map(([lo, hi]) => cover(lo, hi));
  const ids = covers.flat();
  const hashes = ids.length === 0 ? [] : await reader.readHashes(ids);
  if (hashes.length !== ids.length) throw tlogError("tlog_hash_missing", "the hash store returned fewer hashes than asked for");
  let at = 0;
  return covers.map((c) => {
    const chunk = hashes.slice(at, at + c.length);
    at += c.length;
    let h = chunk[chunk.length - 1]!;
    for (let i = chunk.length - 2; i >= 0; i--) h = nodeHash(chunk[i]!, h);
    return h;
  });
}

function assertSize(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw tlogError("tlog_out_of_range", `${what} must be a non-negative integer`);
}

/** MTH(D[0:n]) from the stored hashes (RFC 9162 §2.1.1). */
export async function treeHash(treeSize: number, reader: HashReader): Promise<Buffer> {
  assertSize("the tree size", treeSize);
  if (treeSize === 0) return EMPTY_TREE_HASH;
  const [h] = await rangeHashes([[0, treeSize]], reader);
  return h!;
}

/**
 * The inclusion proof PATH(m, D[n]) of RFC 9162 §2.1.3.1, leaf side first. Walks the recursion
 * top-down collecting the sibling ranges, then reverses: the recursive part comes first in PATH.
 */
export async function inclusionProof(index: number, treeSize: number, reader: HashReader): Promise<Buffer[]> {
  assertSize("the tree size", treeSize);
  assertSize("the leaf index", index);
  if (index >= treeSize) throw tlogError("tlog_out_of_range", `leaf ${index} is not in a tree of size ${treeSize}`);
  const siblings: Range[] = [];
  let lo = 0;
  let hi = treeSize;
  while (hi - lo > 1) {
    const k = splitPoint(hi - lo);
    if (index < lo + k) {
      siblings.push([lo + k, hi]);
      hi = lo + k;
    } else {
      siblings.push([lo, lo + k]);
      lo += k;
    }
  }
  return rangeHashes(siblings.reverse(), reader);
}

/**
 * The consistency proof PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 §2.1.4.1, for
 * 0 < m < n; empty when m = n (the sizes are the same tree) or m = 0 (every tree extends the empty one).
 */
export async function consistencyProof(first: number, second: number, reader: HashReader): Promise<Buffer[]> {
  assertSize("the first tree size", first);
  assertSize("the second tree size", second);
  if (first > second) throw tlogError("tlog_out_of_range", `tree size ${first} is larger than ${second}`);
  if (first === 0 || first === second) return [];
  const parts: Range[] = [];
  let m = first;
  let lo = 0;
  let hi = second;
  let whole = true; // SUBPROOF's b: the subtree is still the whole old tree (its hash is known)
  for (;;) {
    if (m === hi - lo) {
      if (!whole) parts.push([lo, hi]);
      break;
    }
    const k = splitPoint(hi - lo);
    if (m <= k) {
      parts.push([lo + k, hi]);
      hi = lo + k;
    } else {
      parts.push([lo, lo + k]);
      m -= k;
      lo += k;
      whole = false;
    }
  }
  return rangeHashes(parts.reverse(), reader);
}

function assertProofShape(proof: readonly Uint8Array[], ...hashes: Uint8Array[]): void {
  if (proof.length > MAX_PROOF_LENGTH) throw tlogError("tlog_malformed_proof", `a proof has at most ${MAX_PROOF_LENGTH} hashes`);
  for (const h of [...proof, ...hashes]) {
    if (h.length !== HASH_SIZE) throw tlogError("tlog_malformed_proof", `every hash is ${HASH_SIZE} bytes`);
  }
}

const isOdd = (n: number) => n % 2 === 1;
const half = (n: number) => Math.floor(n / 2);

/**
 * Verifies an inclusion proof exactly as RFC 9162 §2.1.3.2 writes it (step numbers below).
 * Throws tlog_proof_invalid (or tlog_out_of_range, tlog_malformed_proof) on refusal.
 */
export function verifyInclusion(index: number, treeSize: number, leaf: Uint8Array, proof: readonly Uint8Array[], root: Uint8Array): void {
  assertSize("the tree size", treeSize);
  assertSize("the leaf index", index);
  assertProofShape(proof, leaf, root);
  // 1. leaf_index must be below tree_size.
  if (index >= treeSize) throw tlogError("tlog_out_of_range", `leaf ${index} is not in a tree of size ${treeSize}`);
  // 2.-3.
  let fn = index;
  let sn = treeSize - 1;
  let r: Uint8Array = leaf;
  // 4.
  for (const p of proof) {
    if (sn === 0) throw tlogError("tlog_proof_invalid", "the inclusion proof is too long");
    if (isOdd(fn) || fn === sn) {
      r = nodeHash(p, r);
      if (!isOdd(fn)) {
        while (!isOdd(fn) && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  // 5.
  if (sn !== 0) throw tlogError("tlog_proof_invalid", "the inclusion proof is too short");
  if (!Buffer.from(root).equals(r)) throw tlogError("tlog_proof_invalid", "the inclusion proof does not lead to the root hash");
}

/**
 * Verifies a consistency proof exactly as RFC 9162 §2.1.4.2 writes it, for 0 < first < second.
 * Before it, the two cases the RFC leaves out: equal sizes (empty proof, equal hashes) and an
 * empty first tree (empty proof, first hash = MTH({})).
 */
export function verifyConsistency(
  first: number,
  second: number,
  firstHash: Uint8Array,
  secondHash: Uint8Array,
  proof: readonly Uint8Array[],
): void {
  assertSize("the first tree size", first);
  assertSize("the second tree size", second);
  assertProofShape(proof, firstHash, secondHash);
  if (first > second) throw tlogError("tlog_out_of_range", `tree size ${first} is larger than ${second}`);
  if (first === second || first === 0) {
    if (proof.length !== 0) throw tlogError("tlog_proof_invalid", "a consistency proof from an equal or empty tree is empty");
    const expected = first === 0 ? EMPTY_TREE_HASH : secondHash;
    if (!Buffer.from(firstHash).equals(expected)) throw tlogError("tlog_proof_invalid", "the tree hashes do not match");
    return;
  }
  // 1.
  if (proof.length === 0) throw tlogError("tlog_proof_invalid", "the consistency proof is empty");
  // 2.
  const path = isPowerOfTwo(first) ? [firstHash, ...proof] : [...proof];
  // 3.
  let fn = first - 1;
  let sn = second - 1;
  // 4.
  while (isOdd(fn)) {
    fn = half(fn);
    sn = half(sn);
  }
  // 5.
  let fr: Uint8Array = path[0]!;
  let sr: Uint8Array = path[0]!;
  // 6.
  for (const c of path.slice(1)) {
    if (sn === 0) throw tlogError("tlog_proof_invalid", "the consistency proof is too long");
    if (isOdd(fn) || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (!isOdd(fn)) {
        while (!isOdd(fn) && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = half(fn);
    sn = half(sn);
  }
  // 7.
  if (sn !== 0) throw tlogError("tlog_proof_invalid", "the consistency proof is too short");
  if (!Buffer.from(firstHash).equals(fr)) throw tlogError("tlog_proof_invalid", "the consistency proof does not lead to the first tree hash");
  if (!Buffer.from(secondHash).equals(sr)) throw tlogError("tlog_proof_invalid", "the consistency proof does not lead to the second tree hash");
}

function isPowerOfTwo(n: number): boolean {
  let k = 1;
  while (k < n) k *= 2;
  return k === n;
}

/**
 * The hashes to store when `leafHashes` are appended to a tree of `treeSize` leaves: each leaf
 * hash at level 0, and every subtree the new leaves complete, level by level. The only old
 * hashes it reads are the left siblings on the old tree's right edge (at most one per level),
 * in one batch. The caller stores the result in the same transaction as the leaves.
 */
export async function hashesToStore(treeSize: number, leafHashes: readonly Buffer[], reader: HashReader): Promise<StoredHash[]> {
  assertSize("the tree size", treeSize);
  for (const h of leafHashes) if (h.length !== HASH_SIZE) throw tlogError("tlog_malformed_proof", `a leaf hash is ${HASH_SIZE} bytes`);
  const newSize = treeSize + leafHashes.length;
  // At level L the first new node is floor(old/2^L); when it is a right child its old left sibling is needed.
  const edge: SubtreeId[] = [];
  for (let level = 0, width = 1; width <= newSize; level++, width *= 2) {
    const firstNew = Math.floor(treeSize / width);
    if (Math.floor(newSize / width) > firstNew && isOdd(firstNew)) edge.push({ level, index: firstNew - 1 });
  }
  const edgeHashes = edge.length === 0 ? [] : await reader.readHashes(edge);
  const edgeAt = new Map(edge.map((id, i) => [id.level, edgeHashes[i]]));
  const out: StoredHash[] = [];
  let start = treeSize;
  let level = 0;
  let nodes: Buffer[] = [...leafHashes];
  while (nodes.length > 0) {
    nodes.forEach((hash, i) => out.push({ level, index: start + i, hash }));
    if (isOdd(start)) {
      const left = edgeAt.get(level);
      if (!left) throw tlogError("tlog_hash_missing", `the stored hash at level ${level}, index ${start - 1} is missing`);
      nodes = [left, ...nodes];
      start -= 1;
    }
    const parents: Buffer[] = [];
    for (let i = 0; i + 1 < nodes.length; i += 2) parents.push(nodeHash(nodes[i]!, nodes[i + 1]!));
    nodes = parents;
    start /= 2;
    level++;
  }
  return out;
}

/**
 * The stored hashes in memory, one contiguous buffer per level: for tests, benchmarks and
 * offline tools (an auditor rebuilding the tree from entries). Append-only, like the log.
 */
export class MemoryHashStore implements HashReader {
  private readonly levels: Array<{ buf: Buffer; count: number }> = [];

  /** The number of leaves stored. */
  get treeSize(): number {
    return this.levels[0]?.count ?? 0;
  }

  /** Appends leaf hashes, storing every subtree hash they complete. */
  async appendLeafHashes(leafHashes: readonly Buffer[]): Promise<void> {
    this.write(await hashesToStore(this.treeSize, leafHashes, this));
  }

  /** Stores hashes from hashesToStore; each must be the next one of its level. */
  write(hashes: readonly StoredHash[]): void {
    for (const { level, index, hash } of hashes) {
      const l = (this.levels[level] ??= { buf: Buffer.alloc(HASH_SIZE * 1024), count: 0 });
      if (index !== l.count) throw tlogError("tlog_hash_missing", `level ${level} expects index ${l.count} next, not ${index}`);
      if ((l.count + 1) * HASH_SIZE > l.buf.length) {
        const bigger = Buffer.alloc(l.buf.length * 2);
        l.buf.copy(bigger);
        l.buf = bigger;
      }
      hash.copy(l.buf, l.count * HASH_SIZE);
      l.count++;
    }
  }

  readHashesSync(ids: readonly SubtreeId[]): Buffer[] {
    return ids.map(({ level, index }) => {
      const l = this.levels[level];
      if (!l || index < 0 || index >= l.count) throw tlogError("tlog_hash_missing", `no stored hash at level ${level}, index ${index}`);
      return Buffer.from(l.buf.subarray(index * HASH_SIZE, (index + 1) * HASH_SIZE));
    });
  }

  readHashes(ids: readonly SubtreeId[]): Promise<Buffer[]> {
    try {
      return Promise.resolve(this.readHashesSync(ids));
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }
}
