import { describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import {
  EMPTY_TREE_HASH,
  MemoryHashStore,
  consistencyProof,
  inclusionProof,
  leafHash,
  nodeHash,
  treeHash,
  verifyConsistency,
  verifyInclusion,
} from "../../src/transparency/merkle.js";
import { thrownCode } from "../helpers/refusal.js";

/**
 * Known-answer vectors of the Certificate Transparency reference tree: the eight inputs, roots
 * and proofs of the CT C++ reference implementation (certificate-transparency
 * cpp/merkletree/merkle_tree_test.cc), as republished in certificate-transparency-go
 * merkle/merkle_tree_test.go ("Generated from ReferenceSnapshotConsistency in C++ version").
 * Indexes are 0-based here; the C++ tests count leaves from 1.
 */
const CT_INPUTS = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"].map((h) =>
  Buffer.from(h, "hex"),
);
const CT_ROOTS = [
  "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
  "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
  "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
  "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
  "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
  "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
  "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
  "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];
const CT_INCLUSION: Array<{ index: number; size: number; proof: string[] }> = [
  {
    index: 0,
    size: 8,
    proof: [
      "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
  },
  {
    index: 5,
    size: 8,
    proof: [
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
  },
  { index: 2, size: 3, proof: ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"] },
  {
    index: 1,
    size: 5,
    proof: [
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
  },
];
const CT_CONSISTENCY: Array<{ first: number; second: number; proof: string[] }> = [
  { first: 1, second: 1, proof: [] },
  {
    first: 1,
    second: 8,
    proof: [
      "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
  },
  {
    first: 6,
    second: 8,
    proof: [
      "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
  },
  {
    first: 2,
    second: 5,
    proof: [
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
  },
];

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const unhex = (s: string) => Buffer.from(s, "hex");

async function ctStore(): Promise<MemoryHashStore> {
  const store = new MemoryHashStore();
  await store.appendLeafHashes(CT_INPUTS.map(leafHash));
  return store;
}

/** MTH straight from the RFC 9162 §2.1.1 recursion, on leaf hashes in memory: a second opinion. */
function mthByRecursion(leaves: readonly Buffer[]): Buffer {
  if (leaves.length === 0) return createHash("sha256").digest();
  if (leaves.length === 1) return leaves[0]!;
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(mthByRecursion(leaves.slice(0, k)), mthByRecursion(leaves.slice(k)));
}

function flipEachBit(hashes: readonly Buffer[], check: (mutated: Buffer[]) => string | undefined): { tried: number; accepted: number } {
  let tried = 0;
  let accepted = 0;
  for (let i = 0; i < hashes.length; i++) {
    for (let byte = 0; byte < hashes[i]!.length; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const mutated = hashes.map((h) => Buffer.from(h));
        mutated[i]![byte]! ^= 1 << bit;
        tried++;
        if (check(mutated) === undefined) accepted++;
      }
    }
  }
  return { tried, accepted };
}

describe("Merkle tree (RFC 9162 §2.1) against the CT reference vectors", () => {
  it("the empty tree hash is SHA-256 of nothing (e3b0c442…)", async () => {
    expect(hex(EMPTY_TREE_HASH)).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect(hex(await treeHash(0, new MemoryHashStore()))).toBe(hex(EMPTY_TREE_HASH));
  });

  it("the tree hash of every prefix of the 8-leaf reference tree matches the CT roots", async () => {
    const store = await ctStore();
    for (let n = 1; n <= 8; n++) expect(hex(await treeHash(n, store)), `size ${n}`).toBe(CT_ROOTS[n - 1]);
  });

  it("generates the CT reference inclusion proofs, and they verify", async () => {
    const store = await ctStore();
    for (const v of CT_INCLUSION) {
      const proof = await inclusionProof(v.index, v.size, store);
      expect(proof.map(hex), `${v.index}@${v.size}`).toEqual(v.proof);
      verifyInclusion(v.index, v.size, leafHash(CT_INPUTS[v.index]!), v.proof.map(unhex), unhex(CT_ROOTS[v.size - 1]!));
    }
  });

  it("generates the CT reference consistency proofs, and they verify", async () => {
    const store = await ctStore();
    for (const v of CT_CONSISTENCY) {
      const proof = await consistencyProof(v.first, v.second, store);
      expect(proof.map(hex), `${v.first}->${v.second}`).toEqual(v.proof);
      verifyConsistency(v.first, v.second, unhex(CT_ROOTS[v.first - 1]!), unhex(CT_ROOTS[v.second - 1]!), v.proof.map(unhex));
    }
  });
});

describe("Merkle tree: every shape up to 70 leaves", () => {
  const leaves = Array.from({ length: 70 }, (_, i) => leafHash(Buffer.from(`leaf ${i}`)));

  it("appending one leaf at a time and in uneven batches stores the same hashes and the recursion's tree hashes", async () => {
    const oneByOne = new MemoryHashStore();
    const batched = new MemoryHashStore();
    for (const l of leaves) await oneByOne.appendLeafHashes([l]);
    for (let at = 0, step = 1; at < leaves.length; at += step, step = (step * 3) % 17 || 1) {
      await batched.appendLeafHashes(leaves.slice(at, at + step));
    }
    expect(batched.treeSize).toBe(70);
    for (let n = 0; n <= 70; n++) {
      const expected = hex(mthByRecursion(leaves.slice(0, n)));
      expect(hex(await treeHash(n, oneByOne)), `size ${n}`).toBe(expected);
      expect(hex(await treeHash(n, batched)), `size ${n}`).toBe(expected);
    }
  });

  it("every inclusion proof and every consistency proof of every pair of sizes verifies, and the wrong leaf, index or root is refused", async () => {
    const store = new MemoryHashStore();
    await store.appendLeafHashes(leaves);
    const roots = [EMPTY_TREE_HASH, ...(await Promise.all(leaves.map((_, i) => treeHash(i + 1, store))))];
    let checked = 0;
    for (let n = 1; n <= 70; n++) {
      for (let i = 0; i < n; i++) {
        const proof = await inclusionProof(i, n, store);
        verifyInclusion(i, n, leaves[i]!, proof, roots[n]!);
        expect(thrownCode(() => verifyInclusion(i, n, leaves[(i + 1) % 70]!, proof, roots[n]!))).toBe("tlog_proof_invalid");
        if (n > 1) expect(thrownCode(() => verifyInclusion((i + 1) % n, n, leaves[i]!, proof, roots[n]!))).toMatch(/tlog_proof_invalid/);
        if (n > 1) expect(thrownCode(() => verifyInclusion(i, n, leaves[i]!, proof, roots[n - 1]!))).toBe("tlog_proof_invalid");
        checked++;
      }
      for (let m = 0; m <= n; m++) {
        const proof = await consistencyProof(m, n, store);
        verifyConsistency(m, n, roots[m]!, roots[n]!, proof);
        if (m > 0 && m < n) {
          expect(thrownCode(() => verifyConsistency(m, n, roots[m - 1]!, roots[n]!, proof))).toBe("tlog_proof_invalid");
          expect(thrownCode(() => verifyConsistency(m, n, roots[m]!, roots[n - 1]!, proof))).toBe("tlog_proof_invalid");
          expect(thrownCode(() => verifyConsistency(m, n, roots[m]!, roots[n]!, proof.slice(1)))).toMatch(/tlog_proof_invalid/);
        }
        checked++;
      }
    }
    expect(checked).toBe(70 * 71 / 2 + (70 * 71) / 2 + 70);
  });

  it("every single-bit flip in a proof, the leaf hash or a root is refused", async () => {
    const store = new MemoryHashStore();
    await store.appendLeafHashes(leaves);
    const [n, m, i] = [70, 37, 45];
    const root = await treeHash(n, store);
    const old = await treeHash(m, store);
    const incl = await inclusionProof(i, n, store);
    const inclusion = flipEachBit([leaves[i]!, root, ...incl], ([leaf, r, ...p]) => thrownCode(() => verifyInclusion(i, n, leaf!, p, r!)));
    expect(inclusion.tried).toBe((2 + incl.length) * 256);
    expect(inclusion.accepted).toBe(0);
    const cons = await consistencyProof(m, n, store);
    const consistency = flipEachBit([old, root, ...cons], ([a, b, ...p]) => thrownCode(() => verifyConsistency(m, n, a!, b!, p)));
    expect(consistency.tried).toBe((2 + cons.length) * 256);
    expect(consistency.accepted).toBe(0);
  });

  it("refuses out-of-range requests and malformed proofs with stable codes", async () => {
    const store = new MemoryHashStore();
    await store.appendLeafHashes(leaves.slice(0, 8));
    await expect(inclusionProof(8, 8, store)).rejects.toMatchObject({ code: "tlog_out_of_range" });
    await expect(inclusionProof(-1, 8, store)).rejects.toMatchObject({ code: "tlog_out_of_range" });
    await expect(inclusionProof(0.5, 8, store)).rejects.toMatchObject({ code: "tlog_out_of_range" });
    await expect(consistencyProof(9, 8, store)).rejects.toMatchObject({ code: "tlog_out_of_range" });
    await expect(treeHash(9, store)).rejects.toMatchObject({ code: "tlog_hash_missing" });
    const root = await treeHash(8, store);
    expect(thrownCode(() => verifyInclusion(0, 8, leaves[0]!, [Buffer.alloc(31)], root))).toBe("tlog_malformed_proof");
    expect(thrownCode(() => verifyInclusion(0, 8, leaves[0]!, Array.from({ length: 65 }, () => root), root))).toBe("tlog_malformed_proof");
    expect(thrownCode(() => verifyConsistency(0, 8, root, root, []))).toBe("tlog_proof_invalid");
    expect(thrownCode(() => verifyConsistency(8, 8, root, root, [root]))).toBe("tlog_proof_invalid");
    expect(thrownCode(() => verifyConsistency(3, 8, root, root, []))).toBe("tlog_proof_invalid");
  });
});
