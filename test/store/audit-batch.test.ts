import { afterAll, beforeAll, expect, it } from "vitest";
import { auditRecordHash, verifyAuditChain } from "../../src/audit/log.js";
import { AUDIT_GENESIS_HASH, type AuditAppend, type AuditHasher, type Store } from "../../src/store/types.js";
import { issuedSvidRecord } from "../helpers/audit-records.js";
import { forEachEngine } from "../helpers/store-engines.js";

/**
 * AuditRepository.appendBatch, the group commit's transaction (issue 10), on SQLite and
 * PostgreSQL alike: records chained in the order given, SVID records in the same transaction,
 * all or nothing; and batches from one connection interleaved with appends from another still
 * make one chain.
 */
const t0 = new Date("2026-01-01T00:00:00Z");
const hash: AuditHasher = (input, prevHash, seq) => auditRecordHash({ ...input, seq, prevHash });
const svid = (serial: string) => issuedSvidRecord(serial, t0, "spiffe://example.org/node");
const issuance = (serial: string): AuditAppend => ({
  input: { time: t0, event: "issue_x509", outcome: "success", actor: "spiffe://example.org/node", serial, details: {} },
  svid: svid(serial),
});
const refusal = (i: number): AuditAppend => ({ input: { time: t0, event: "refuse", outcome: "refused", code: "not_entitled", details: { i } } });

forEachEngine("audit batch append", (engine) => {
  let store: Store;
  let other: Store;
  beforeAll(async () => {
    const db = await engine.newDatabase();
    store = await db.open();
    // A second connection (SQLite) or pool (PostgreSQL) on the same database: another replica.
    other = await db.open();
  });
  afterAll(async () => {
    await other?.close();
    await store?.close();
  });

  it("chains a batch in the order given, seqs contiguous, every SVID record committed with it", async () => {
    const [first] = await store.audit.appendBatch([refusal(0)], hash);
    const items = [issuance("a1"), refusal(1), issuance("a2"), issuance("a3"), refusal(2)];
    const records = await store.audit.appendBatch(items, hash);
    expect(records.map((r) => r.seq)).toEqual([2, 3, 4, 5, 6]);
    expect(records.map((r) => r.serial ?? r.details.i)).toEqual(["a1", 1, "a2", "a3", 2]);
    expect(records[0]!.prevHash).toBe(first!.hash);
    records.slice(1).forEach((r, i) => expect(r.prevHash).toBe(records[i]!.hash));
    expect(await store.audit.list(0, 10)).toEqual([first!, ...records]);
    for (const s of ["a1", "a2", "a3"]) expect(await store.svids.get(s)).toEqual(svid(s));
    expect(await verifyAuditChain(store.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: true, records: 6 });
  });

  it("a batch whose one serial is recorded already fails as a whole: no audit record, no SVID record", async () => {
    await store.svids.record(svid("dup"));
    const before = await store.audit.extent();
    await expect(store.audit.appendBatch([issuance("b1"), refusal(3), issuance("dup"), issuance("b2")], hash)).rejects.toThrow();
    expect(await store.audit.extent()).toEqual(before);
    expect(await store.svids.get("b1")).toBeUndefined();
    expect(await store.svids.get("b2")).toBeUndefined();
    // The same records without the faulty one commit, at the seq the failed batch did not take.
    const records = await store.audit.appendBatch([issuance("b1"), issuance("b2")], hash);
    expect(records.map((r) => r.seq)).toEqual([before.lastSeq + 1, before.lastSeq + 2]);
  });

  it("a batch from one connection and single appends from another, all at once, make one chain", async () => {
    const before = await store.audit.extent();
    const batches = Array.from({ length: 6 }, (_, b) =>
      store.audit.appendBatch(
        Array.from({ length: 8 }, (_, i) => issuance(`c${b}-${i}`)),
        hash,
      ),
    );
    const singles = Array.from({ length: 24 }, (_, i) => other.audit.appendBatch([refusal(100 + i)], hash).then(([r]) => r!));
    const [fromBatches, fromSingles] = await Promise.all([Promise.all(batches), Promise.all(singles)]);
    // Each batch is contiguous; together with the singles they fill the range without gap or repeat.
    for (const batch of fromBatches) expect(batch.map((r) => r.seq)).toEqual(batch.map((_, i) => batch[0]!.seq + i));
    const seqs = [...fromBatches.flat(), ...fromSingles].map((r) => r.seq).sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: 72 }, (_, i) => before.lastSeq + 1 + i));
    expect(await verifyAuditChain(other.audit, AUDIT_GENESIS_HASH)).toMatchObject({ ok: true, records: before.count + 72 });
  });
});
