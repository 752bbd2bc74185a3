import type { TransparencyRepository } from "../store/types.js";
import { tlogError } from "./errors.js";
import type { HashReader, SubtreeId } from "./merkle.js";

/** The HashReader over the datastore's stored subtree hashes: one batched read per tree hash or proof. */
export class StoredHashReader implements HashReader {
  constructor(private readonly repo: TransparencyRepository) {}

  async readHashes(ids: readonly SubtreeId[]): Promise<Buffer[]> {
    const found = await this.repo.readHashes(ids);
    return found.map((h, i) => {
      if (!h) throw tlogError("tlog_hash_missing", `no stored hash at level ${ids[i]!.level}, index ${ids[i]!.index}`);
      return h;
    });
  }
}
