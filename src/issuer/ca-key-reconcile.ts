import type { Logger } from "pino";
import type { KeyStore, StoredKeyObject } from "../hsm/signer.js";
import type { CaKeyRecord, CaKeyRepository } from "../store/types.js";

/** Why a key object under one of our label prefixes is not kept. */
type Leftover = "pending" | "retired" | "unrecorded";

const WHY: Record<Leftover, string> = {
  pending: "its creation was interrupted before the key was published (pending record)",
  retired: "its key was retired, but destroying it was interrupted",
  unrecorded: "no record in the database names it: a creation interrupted before records were written first",
};

export interface ReconcileInput {
  keyStore: KeyStore;
  caKeys: CaKeyRepository;
  log: Logger;
  /** The label prefixes that are ours alone (one per key kind). */
  prefixes: readonly string[];
  /** Every record `list` returned (published and retired), already checked against the KeyStore. */
  records: readonly CaKeyRecord[];
  /** Labels to keep whatever the records say (the upstream CA key, when it lives in the same token). */
  keep: ReadonlySet<string>;
}

/**
 * Start-up clean-up after a crash during key creation or retirement. Creation records its intent
 * (a pending row) before the HSM generates anything, so every key our code creates is named in
 * the database first. At start:
 * - objects under our prefixes whose record is pending or retired are destroyed: a pending key
 *   was never published nor signed anything, so destroying it and preparing again is safe (we do
 *   not adopt it: finishing it would need a CA certificate issued at some later time for a
 *   rotation step the operator saw fail);
 * - objects under our prefixes that no record names are destroyed too, but only when this database
 *   records keys of its own: a fresh database pointed at a token that already holds Hallmark keys
 *   (another deployment's, or a lost database's) must not wipe them;
 * - pending records are then discarded.
 * Runs after every published key was found and matched, so a start that is going to fail (a
 * token restored from an older backup than the database) destroys nothing.
 * One warn line per object (label and object class, never key material).
 */
export async function reconcileCaKeys(o: ReconcileInput): Promise<void> {
  const pending = await o.caKeys.listPending();
  const status = new Map<string, Leftover>();
  for (const r of o.records) if (r.status === "retired") status.set(r.label, "retired");
  for (const r of pending) status.set(r.label, "pending");
  const published = o.records.filter((r) => r.status !== "retired").map((r) => r.label);
  const keep = new Set([...o.keep, ...published]);
  const ownsPrefix = published.length > 0;

  const objects: StoredKeyObject[] = [];
  for (const prefix of o.prefixes) objects.push(...(await o.keyStore.listKeyObjects(prefix)));
  const byLabel = new Map<string, StoredKeyObject[]>();
  for (const obj of objects.filter((x) => !keep.has(x.label))) byLabel.set(obj.label, [...(byLabel.get(obj.label) ?? []), obj]);

  for (const [label, halves] of byLabel) {
    const reason = status.get(label) ?? "unrecorded";
    if (reason === "unrecorded" && !ownsPrefix) {
      for (const h of halves) {
        o.log.warn({ label, objectClass: h.objectClass }, "a Hallmark-labelled key object in the HSM is not recorded in this new database; left alone");
      }
      continue;
    }
    await o.keyStore.destroy(label);
    for (const h of halves) o.log.warn({ label, objectClass: h.objectClass, reason: WHY[reason] }, "destroyed a leftover CA key object in the HSM");
  }
  for (const r of pending) {
    if (await o.caKeys.discardPending(r.id)) {
      o.log.warn({ id: r.id, kind: r.kind, label: r.label }, "discarded the record of an interrupted CA key creation");
    }
  }
  const unlabelled = await o.keyStore.countUnlabelledObjects();
  if (unlabelled > 0) {
    o.log.warn({ count: unlabelled }, "the HSM token holds objects with an empty label (possibly shells of a creation the HSM itself did not finish); nothing says whose they are, left alone");
  }
}
