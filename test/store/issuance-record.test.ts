import { afterAll, beforeAll, expect, it } from "vitest";
import { AuditLog } from "../../src/audit/log.js";
import type { AuditRecordInput, EntryRecord, Store } from "../../src/store/types.js";
import { issuedSvidRecord } from "../helpers/audit-records.js";
import { forEachEngine } from "../helpers/store-engines.js";

/**
 * One transaction per issuance (issue 10): the SVID's record and its audit record are written by
 * one audit append, on SQLite and PostgreSQL alike: both rows or neither. And the entries an
 * issuance for one SPIFFE ID may use come from one read, the node's children and the aliases.
 */
const t0 = new Date("2026-01-01T00:00:00Z");
const svid = (serial: string) => issuedSvidRecord(serial, t0, "spiffe://example.org/node");
const success = (serial: string): AuditRecordInput => ({ time: t0, event: "issue_x509", outcome: "success", actor: "spiffe://example.org/node", spiffeId: "spiffe://example.org/w", serial, details: {} });

forEachEngine("issuance record", (engine) => {
  let store: Store;
  let audit: AuditLog;
  beforeAll(async () => {
    store = await (await engine.newDatabase()).open();
    audit = new AuditLog(store.audit);
  });
  afterAll(async () => {
    await store.close();
  });

  it("commits the SVID's record with its audit record", async () => {
    const record = await audit.append(success("a1"), svid("a1"));
    expect(await store.svids.get("a1")).toEqual(svid("a1"));
    expect((await store.audit.tail(1))[0]).toMatchObject({ seq: record.seq, serial: "a1", hash: record.hash });
  });

  it("a serial recorded already fails the append: no audit record is written either", async () => {
    await store.svids.record(svid("b1"));
    const before = await store.audit.extent();
    await expect(audit.append(success("b1"), { ...svid("b1"), spiffeId: "spiffe://example.org/other" })).rejects.toThrow();
    expect(await store.audit.extent()).toEqual(before);
    expect((await store.svids.get("b1"))?.spiffeId).toBe("spiffe://example.org/w");
    // The chain goes on from where it was: the failed append took no seq.
    expect((await audit.append(success("b2"), svid("b2"))).seq).toBe(before.lastSeq + 1);
  });

  it("an audit append that fails leaves no SVID record", async () => {
    const before = await store.audit.extent();
    const refused = store.audit.appendBatch([{ input: success("c1"), svid: svid("c1") }], () => {
      throw new Error("the record could not be hashed");
    });
    await expect(refused).rejects.toThrow();
    expect(await store.svids.get("c1")).toBeUndefined();
    expect(await store.audit.extent()).toEqual(before);
  });

  it("reads the entries of one SPIFFE ID under several parents in one call, oldest first", async () => {
    const node = "spiffe://example.org/node/a";
    const server = "spiffe://example.org/hallmark/server";
    const w = "spiffe://example.org/w";
    const entry = (id: string, spiffeId: string, parentId: string, s: number): EntryRecord => ({
      id,
      spiffeId,
      parentId,
      selectors: [`k:${id}`],
      dnsNames: [],
      admin: false,
      createdAt: new Date(t0.getTime() + s * 1000),
    });
    await store.entries.create(entry("00000000-0000-4000-8000-000000000003", w, server, 1));
    await store.entries.create(entry("00000000-0000-4000-8000-000000000002", w, node, 2));
    await store.entries.create(entry("00000000-0000-4000-8000-000000000001", w, "spiffe://example.org/node/b", 3));
    await store.entries.create(entry("00000000-0000-4000-8000-000000000004", "spiffe://example.org/other", node, 4));
    const found = await store.entries.listForSpiffeId(w, [node, server]);
    expect(found.map((e) => [e.id.slice(-1), e.parentId])).toEqual([
      ["3", server],
      ["2", node],
    ]);
    expect(await store.entries.listForSpiffeId(w, [node])).toHaveLength(1);
    expect(await store.entries.listForSpiffeId(w, [])).toEqual([]);
  });
});
