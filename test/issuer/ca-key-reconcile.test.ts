import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import type { DestinationStream } from "pino";
import pkcs11js from "pkcs11js";
import { acquireModule, findTokenSlot, openUserSession, releaseModule } from "../../src/hsm/pkcs11-module.js";
import { openPkcs11KeyStore, type Pkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import type { Signer } from "../../src/hsm/signer.js";
import { ensureSoftHsmToken } from "../../src/hsm/softhsm.js";
import { CertificateAuthority, type AuthorityOptions, caKeyLabel } from "../../src/issuer/authority.js";
import { createLogger } from "../../src/log.js";
import { TrustDomain } from "../../src/spiffe/id.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { CaKeyKind, CaKeyStatus, Store } from "../../src/store/types.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 7 item 8b: kill -9 during `ca rotate --step prepare` left a complete key pair with no
 * database row and half pairs. The crash window is simulated here by making exactly those
 * leftovers through the keystore and the store, then starting the authority on them.
 */
const dir = tempDir("reconcile");
const td = TrustDomain.parse("example.org");
const now = new Date("2031-01-01T00:00:00Z");
const PIN = "3333";
let modulePath: string;
let keyStore: Pkcs11KeyStore;
const stores: Store[] = [];

beforeAll(async () => {
  ({ modulePath } = await ensureSoftHsmToken({ dir: dir.path, label: "reconcile", pin: PIN, soPin: "4444" }));
  keyStore = await openPkcs11KeyStore({ modulePath, tokenLabel: "reconcile", pin: PIN, sessions: 2 });
});
afterAll(async () => {
  for (const s of stores) await s.close();
  await keyStore?.close();
  dir.remove();
});

async function newStore(name: string): Promise<Store> {
  const s = await openSqliteStore(join(dir.path, `${name}.db`));
  stores.push(s);
  return s;
}

/** A logger whose warn lines the test reads back, as the operator would in the server log. */
function capturingLog() {
  const lines: Array<Record<string, unknown>> = [];
  const dest: DestinationStream = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) };
  return { lines, log: createLogger("warn", dest) };
}

function options(store: Store, log = createLogger("silent"), over: Partial<AuthorityOptions> = {}): AuthorityOptions {
  return {
    trustDomain: td,
    keyStore,
    caKeys: store.caKeys,
    svids: store.svids,
    clock: () => now,
    log,
    x509: { keyType: "ec-p256", ttlSeconds: 30 * 86400 },
    jwt: { keyType: "ec-p256" },
    refreshHintSeconds: 300,
    ...over,
  };
}

/** Removes one half of a generated pair with raw PKCS#11, as a crash inside generation would leave it. */
function destroyHalf(label: string, cls: number): void {
  const pkcs11 = acquireModule(modulePath);
  try {
    const session = openUserSession(pkcs11, findTokenSlot(pkcs11, "reconcile")!, PIN);
    try {
      pkcs11.C_FindObjectsInit(session, [
        { type: pkcs11js.CKA_CLASS, value: cls },
        { type: pkcs11js.CKA_LABEL, value: label },
      ]);
      const [h] = pkcs11.C_FindObjects(session, 1);
      pkcs11.C_FindObjectsFinal(session);
      pkcs11.C_DestroyObject(session, h!);
    } finally {
      pkcs11.C_CloseSession(session);
    }
  } finally {
    releaseModule(pkcs11);
  }
}

/** An object with an empty label, like the shell SoftHSM leaves when killed inside its own object creation. */
function createUnlabelledObject(): void {
  const pkcs11 = acquireModule(modulePath);
  try {
    const session = openUserSession(pkcs11, findTokenSlot(pkcs11, "reconcile")!, PIN);
    try {
      pkcs11.C_CreateObject(session, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_VALUE, value: Buffer.from("not ours") },
      ]);
    } finally {
      pkcs11.C_CloseSession(session);
    }
  } finally {
    releaseModule(pkcs11);
  }
}

const ours = async () => [...(await keyStore.listKeyObjects("hallmark-x509-")), ...(await keyStore.listKeyObjects("hallmark-jwt-"))];
const pairs = (labels: string[]) => labels.flatMap((label) => [`${label} private-key`, `${label} public-key`]).sort();
const described = (objects: Array<{ label: unknown; objectClass: unknown }>) => objects.map((o) => `${String(o.label)} ${String(o.objectClass)}`).sort();

async function recordOnly(store: Store, kind: CaKeyKind, status: CaKeyStatus): Promise<string> {
  const id = randomUUID();
  const label = caKeyLabel(kind, id);
  await store.caKeys.insert({ id, kind, label, keyType: "ec-p256", status, createdAt: now });
  return label;
}

describe("start-up reconciliation of CA keys after a crash", () => {
  it("destroys orphans and half pairs under Hallmark's prefixes, resolves pending rows, logs each object, and prepares again", async () => {
    const store = await newStore("crash");
    const first = await CertificateAuthority.open(options(store));
    const published = (await store.caKeys.list()).map((k) => k.label);
    expect(published).toHaveLength(2);

    // The leftovers of a crash in the old order (generate, then write the row) ...
    const unrecordedPair = caKeyLabel("x509", randomUUID());
    await keyStore.generate(unrecordedPair, "ec-p256");
    const lonePublic = caKeyLabel("jwt", randomUUID());
    await keyStore.generate(lonePublic, "ec-p256");
    destroyHalf(lonePublic, pkcs11js.CKO_PRIVATE_KEY);
    const lonePrivate = caKeyLabel("x509", randomUUID());
    await keyStore.generate(lonePrivate, "ec-p384");
    destroyHalf(lonePrivate, pkcs11js.CKO_PUBLIC_KEY);
    // ... and in the new one: intent recorded, nothing or a whole pair generated, or a retirement cut short.
    const pendingNoKey = await recordOnly(store, "x509", "pending");
    const pendingWithPair = await recordOnly(store, "jwt", "pending");
    await keyStore.generate(pendingWithPair, "ec-p256");
    const retiredStillThere = await recordOnly(store, "x509", "retired");
    await keyStore.generate(retiredStillThere, "ec-p256");
    // Not ours: another label, and an object with no label at all.
    const foreign = await keyStore.generate(`corp-key-${randomUUID()}`, "ec-p256");
    createUnlabelledObject();
    await first.close();

    const { lines, log } = capturingLog();
    const second = await CertificateAuthority.open(options(store, log));

    expect(described(await ours())).toEqual(pairs(published));
    expect(await keyStore.find(foreign.label)).toBeDefined();
    expect(await store.caKeys.listPending()).toEqual([]);
    expect((await store.caKeys.list()).map((k) => k.label).sort()).toEqual([...published, retiredStillThere].sort());

    const destroyed = lines.filter((l) => l.msg === "destroyed a leftover CA key object in the HSM");
    expect(described(destroyed as never)).toEqual(
      [
        ...pairs([unrecordedPair, pendingWithPair, retiredStillThere]),
        `${lonePublic} public-key`,
        `${lonePrivate} private-key`,
      ].sort(),
    );
    // One line per object: its label, class and why; nothing else (no key material).
    for (const l of destroyed) expect(Object.keys(l).sort()).toEqual(["label", "level", "msg", "objectClass", "reason", "service", "time"]);
    expect(destroyed.find((l) => l.label === pendingWithPair)?.reason).toMatch(/pending record/);
    expect(destroyed.find((l) => l.label === retiredStillThere)?.reason).toMatch(/retired/);
    expect(destroyed.find((l) => l.label === unrecordedPair)?.reason).toMatch(/no record/);
    const discarded = lines.filter((l) => l.msg === "discarded the record of an interrupted CA key creation").map((l) => l.label);
    expect(discarded.sort()).toEqual([pendingNoKey, pendingWithPair].sort());
    expect(lines.find((l) => typeof l.count === "number")).toMatchObject({ level: 40, count: 1 });

    // The same CA carries on, and the rotation step the crash interrupted now succeeds.
    expect((await second.keys()).map((k) => k.status).sort()).toEqual(["active", "active"]);
    const changed = await second.rotate("x509", "prepare");
    expect(changed.changed[0]).toMatch(/^prepared x509 key /);
    const prepared = (await store.caKeys.list("x509")).find((k) => k.status === "prepared")!;
    expect(await keyStore.find(prepared.label)).toBeDefined();
    expect(described(await ours())).toEqual(pairs([...published, prepared.label]));

    // A clean start after that logs no leftover at all.
    const quiet = capturingLog();
    await CertificateAuthority.open(options(store, quiet.log));
    expect(quiet.lines.filter((l) => typeof l.label === "string")).toEqual([]);
  });

  it("undoes a creation that fails after the key was generated: no pending row, no key left", async () => {
    const store = await newStore("failed-creation");
    const root = (await CertificateAuthority.open(options(store))).activeKey("x509");
    // An upstream CA that cannot sign: the new key is generated, then its certificate fails.
    const offline: Signer = { label: "upstream", keyType: "ec-p256", publicKey: root.signer.publicKey, sign: () => Promise.reject(new Error("upstream CA offline")) };
    const upstream = { chain: [root.record.certificate!], signer: offline };
    const ca = await CertificateAuthority.open(options(store, undefined, { x509: { keyType: "ec-p256", ttlSeconds: 86400, upstream } }));
    const before = described(await ours());
    await expect(ca.rotate("x509", "prepare")).rejects.toThrow(/upstream CA offline/);
    expect(await store.caKeys.listPending()).toEqual([]);
    expect(described(await ours())).toEqual(before);
  });

  it("leaves unrecorded Hallmark keys alone when the database records no key of its own", async () => {
    const orphan = caKeyLabel("x509", randomUUID());
    await keyStore.generate(orphan, "ec-p256");
    const { lines, log } = capturingLog();
    const store = await newStore("fresh");
    await CertificateAuthority.open(options(store, log));
    expect(await keyStore.find(orphan)).toBeDefined();
    expect(lines.filter((l) => l.label === orphan).map((l) => l.msg)).toEqual([
      "a Hallmark-labelled key object in the HSM is not recorded in this new database; left alone",
      "a Hallmark-labelled key object in the HSM is not recorded in this new database; left alone",
    ]);
    await keyStore.destroy(orphan);
  });

  it("destroys nothing when a start is going to fail because a recorded key is missing", async () => {
    const store = await newStore("missing");
    const ca = await CertificateAuthority.open(options(store));
    const orphan = caKeyLabel("jwt", randomUUID());
    await keyStore.generate(orphan, "ec-p256");
    await keyStore.destroy(ca.activeKey("x509").record.label);
    await expect(CertificateAuthority.open(options(store))).rejects.toMatchObject({ code: "hsm_key_not_found" });
    expect(await keyStore.find(orphan)).toBeDefined();
    await keyStore.destroy(orphan);
  });
});
