import { afterAll, beforeAll, expect, it } from "vitest";
import type { DelegationRecord, Store } from "../../src/store/types.js";
import { type TestDatabase, forEachEngine } from "../helpers/store-engines.js";

/** The delegations repository on both engines: what the token endpoint's lookup finds. */

const t0 = new Date("2026-01-01T00:00:00Z");
const AGENT = "spiffe://example.org/agent/reviewer";
const IDP = "https://idp.example.com";

const record = (id: string, over: Partial<DelegationRecord> = {}): DelegationRecord => ({
  id,
  actor: AGENT,
  subjectIssuer: IDP,
  scopes: ["repo:read", "issues:write"],
  audiences: ["https://api.example"],
  maxTtlSeconds: 300,
  requireDpop: false,
  createdAt: t0,
  ...over,
});

const ids = (ds: DelegationRecord[]) => ds.map((d) => d.id.slice(-1));

forEachEngine("delegations repository", (engine) => {
let db: TestDatabase;
let store: Store;
beforeAll(async () => {
  db = await engine.newDatabase();
  store = await db.open();
  await store.delegations.create(record("00000000-0000-4000-8000-000000000001", { createdAt: new Date(t0.getTime() + 1000) }));
  await store.delegations.create(
    record("00000000-0000-4000-8000-000000000002", { subject: "alice", requireDpop: true, requireAttestor: "tpm", audiences: ["a", "urn:b"], maxTtlSeconds: 60 }),
  );
  await store.delegations.create(record("00000000-0000-4000-8000-000000000003", { subject: "bob" }));
  await store.delegations.create(record("00000000-0000-4000-8000-000000000004", { subjectIssuer: "https://other-idp.example" }));
  await store.delegations.create(record("00000000-0000-4000-8000-000000000005", { actor: "spiffe://example.org/agent/other" }));
});
afterAll(async () => {
  await store.close();
});

  it("finds an actor's delegations for an issuer that cover the subject: those for anyone and those for exactly that subject", async () => {
    expect(ids(await store.delegations.findFor(AGENT, IDP, "alice"))).toEqual(["2", "1"]);
    expect(ids(await store.delegations.findFor(AGENT, IDP, "bob"))).toEqual(["3", "1"]);
    // Without a delegation for this subject, only the one for anyone.
    expect(ids(await store.delegations.findFor(AGENT, IDP, "carol"))).toEqual(["1"]);
    // Another issuer or another actor finds only its own.
    expect(ids(await store.delegations.findFor(AGENT, "https://other-idp.example", "alice"))).toEqual(["4"]);
    expect(ids(await store.delegations.findFor("spiffe://example.org/agent/other", IDP, "alice"))).toEqual(["5"]);
    expect(await store.delegations.findFor("spiffe://example.org/agent/none", IDP, "alice")).toEqual([]);
  });

  it("matches subject and issuer exactly, never as a pattern or prefix", async () => {
    expect(await store.delegations.findFor(AGENT, IDP, "%")).toHaveLength(1);
    expect(ids(await store.delegations.findFor(AGENT, `${IDP}/`, "alice"))).toEqual([]);
    expect(ids(await store.delegations.findFor(AGENT, IDP, "Alice"))).toEqual(["1"]);
  });

  it("reads back every field as it was written, the optional ones absent when unset", async () => {
    const d = await store.delegations.get("00000000-0000-4000-8000-000000000002");
    expect(d).toEqual(
      record("00000000-0000-4000-8000-000000000002", { subject: "alice", requireDpop: true, requireAttestor: "tpm", audiences: ["a", "urn:b"], maxTtlSeconds: 60 }),
    );
    const any = await store.delegations.get("00000000-0000-4000-8000-000000000001");
    expect(any?.subject).toBeUndefined();
    expect(any?.requireAttestor).toBeUndefined();
    expect(await store.delegations.get("00000000-0000-4000-8000-00000000dead")).toBeUndefined();
  });

  it("lists oldest first, all or one actor's, and deletes once", async () => {
    expect(ids(await store.delegations.list())).toEqual(["2", "3", "4", "5", "1"]);
    expect(ids(await store.delegations.list({ actor: "spiffe://example.org/agent/other" }))).toEqual(["5"]);
    expect(await store.delegations.delete("00000000-0000-4000-8000-000000000003")).toBe(true);
    expect(await store.delegations.delete("00000000-0000-4000-8000-000000000003")).toBe(false);
    expect(ids(await store.delegations.findFor(AGENT, IDP, "bob"))).toEqual(["1"]);
  });

  it("keeps delegations across a reopen of the database", async () => {
    await store.close();
    store = await db.open();
    expect(ids(await store.delegations.list({ actor: AGENT }))).toEqual(["2", "4", "1"]);
  });
});
