import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { NodeClient } from "../../src/client/node.js";
import { httpsRaw } from "../helpers/https.js";
import { type Replica, type ReplicaSet, startReplicaSet } from "../helpers/replicas.js";

/**
 * Issue 13, items 3 (server side): two `hallmark server` processes on one PostgreSQL database and
 * one SoftHSM2 token. Started together on an empty database they create one key of each kind;
 * an entry created on A reaches an agent long-polling B as soon as it commits (LISTEN/NOTIFY);
 * with a CA life of seconds, every rotation step is taken once across both (the audit log says
 * so), both serve the same bundle afterwards, and neither's bundle sequence ever goes back.
 */
const NODE = "spiffe://example.org/node/replica-agent";
let set: ReplicaSet;
let a: Replica;
let b: Replica;

// CA keys live 16 s: prepare at 8 s, activate at 12 s, checked every second by each replica.
const ROTATING = { ca: { ttl: 16, rotation: { prepareAt: 0.5, activateAt: 0.75, checkInterval: 1 } } };
const keySteps = async () =>
  (await set.query<{ details: string }>("SELECT details FROM audit_log WHERE event = 'ca_key_change' ORDER BY seq")).map(
    (r) => JSON.parse(r.details) as { step: string; kind: string; keyId: string; trigger: string },
  );
const sequenceOf = async (r: Replica) => (JSON.parse((await httpsRaw(`${r.url}/.well-known/spiffe-bundle`)).text) as { spiffe_sequence: number }).spiffe_sequence;
const bundleOf = async (r: Replica) => (await httpsRaw(`${r.url}/.well-known/spiffe-bundle`)).text;

beforeAll(async () => {
  set = await startReplicaSet("replicas");
  // Started at the same moment on an empty database: each tries to create the first keys.
  [a, b] = await Promise.all([set.start("a", ROTATING), set.start("b", ROTATING)]);
}, 60_000);
afterAll(async () => {
  await set?.destroy();
});

describe("two replicas on one PostgreSQL and one token", () => {
  it("create one key of each kind when they start together on an empty database", async () => {
    const created = (await keySteps()).filter((s) => s.trigger === "start");
    const kinds = created.filter((s) => s.step === "activate").map((s) => s.kind);
    expect(kinds.length).toBeGreaterThan(0);
    expect(new Set(kinds).size).toBe(kinds.length);
    expect(await a.admin("GET", "/admin/ca/keys")).toEqual(await b.admin("GET", "/admin/ca/keys"));
  });

  it("an entry created on A reaches an agent long-polling B as soon as it commits", async () => {
    const { token } = (await a.admin("POST", "/admin/tokens", { spiffe_id: NODE, ttl_seconds: 600 })) as { token: string };
    const { bundle_pem: trustBundlePem } = (await a.admin("GET", "/admin/bundle")) as { bundle_pem: string };
    const svid = await attest({ server: a.url, tls: { trustBundlePem }, producer: joinTokenProducer(token) });
    const onB = new NodeClient([b.url], { trustBundlePem: svid.bundlePem, certPem: svid.certChainPem, keyPem: svid.privateKeyPem });
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const first = await onB.entries({});
      expect(first.full).toBe(true);
      // B holds the poll (nothing has changed): it answers when A's entry commits.
      const poll = onB.entries({ since: first.revision, waitSeconds: 15 });
      await new Promise((r) => setTimeout(r, 300));
      const t0 = performance.now();
      const created = (await a.admin("POST", "/admin/entries", { parent_id: NODE, spiffe_id: `spiffe://example.org/w/${i}`, selectors: [] })) as { id: string };
      const answer = await poll;
      delays.push(performance.now() - t0);
      expect(answer.full).toBe(false);
      if (answer.full) return;
      expect(answer.changes).toEqual([expect.objectContaining({ op: "created", entry: expect.objectContaining({ id: created.id }) })]);
    }
    console.warn(`entry create sent to A -> long poll answered on B: ${delays.map((d) => d.toFixed(1)).join(", ")} ms`);
  });

  it("takes every rotation step once across both, and both serve the same bundle with a sequence that never goes back", async () => {
    const seen = new Map<string, number[]>([["a", []], ["b", []]]);
    // Until each kind's second key is active (a rotation), polling both replicas' sequences.
    for (let i = 0; i < 200; i++) {
      for (const r of [a, b]) seen.get(r.name)!.push(await sequenceOf(r));
      const steps = await keySteps();
      if (steps.some((s) => s.trigger === "schedule" && s.step === "activate" && s.kind === "x509")) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const steps = await keySteps();
    const scheduled = steps.filter((s) => s.trigger === "schedule");
    expect(scheduled.filter((s) => s.step === "prepare" && s.kind === "x509")).toHaveLength(1);
    expect(scheduled.filter((s) => s.step === "activate" && s.kind === "x509")).toHaveLength(1);
    // No step on any key twice: neither replica prepared or activated what the other had.
    const names = steps.map((s) => `${s.step} ${s.kind} ${s.keyId}`);
    expect(new Set(names).size).toBe(names.length);
    for (const [name, sequence] of seen) {
      expect(sequence.length, name).toBeGreaterThan(1);
      expect(sequence, name).toEqual([...sequence].sort((x, y) => x - y));
    }
    // The replica that did not take the step reloads the keys on the notice: both serve the same
    // bundle and list the same keys. Each look compares two answers asked one after the other, and
    // keys of other kinds keep stepping meanwhile (each lives 16 s), so it looks again until they agree.
    const keysOf = async (r: Replica) => JSON.stringify(await r.admin("GET", "/admin/ca/keys"));
    let same = false;
    for (let i = 0; i < 50 && !same; i++) {
      same = (await bundleOf(a)) === (await bundleOf(b)) && (await keysOf(a)) === (await keysOf(b));
      if (!same) await new Promise((r) => setTimeout(r, 100));
    }
    expect(same).toBe(true);
  }, 40_000);
});
