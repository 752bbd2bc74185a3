import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { verify } from "node:crypto";
import { type Pkcs11, acquireModule, findTokenSlot, releaseModule } from "../../src/hsm/pkcs11-module.js";
import { openPkcs11KeyStore, type Pkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import { ensureSoftHsmToken } from "../../src/hsm/softhsm.js";
import { logKeyLabel, openLogKey } from "../../src/transparency/log-key.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * SoftHSM2's file-backed token keeps one view of the token per process. A process that reads the
 * token's file while another process rewrites it (every C_Login does) marks its view invalid and
 * never reads the token again: the token's info fails and keys other processes make never show.
 * Replicas starting together on one token met it (test/e2e/replicas.test.ts failed with
 * "failed to list tokens" and "recorded but not in the KeyStore"). Here the torn read is made on
 * purpose, and the keystore must recover by reloading the module.
 */
const dir = tempDir("stale-view");
const PIN = "1234-test";
const LABEL = "test";
let modulePath: string;
let confPath: string;
let held: Pkcs11;
let ks: Pkcs11KeyStore | undefined;

beforeAll(async () => {
  ({ modulePath, confPath } = await ensureSoftHsmToken({ dir: dir.path, label: LABEL, pin: PIN, soPin: "5678-so" }));
  // Held for the whole file, as another keystore of the process would: the module stays initialised.
  held = acquireModule(modulePath);
});
afterAll(async () => {
  await ks?.close();
  if (held) releaseModule(held);
  dir.remove();
});

/** Bumps the 8-octet big-endian generation number SoftHSM2 keeps at the start of these files. */
function bumpGeneration(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes);
  out.writeBigUInt64BE(out.readBigUInt64BE(0) + 1n, 0);
  return out;
}

/**
 * Leaves this process's view of the token the way a torn read does: the token file is read while
 * it is half written (a newer generation, then nothing), the token's generation moves on while
 * that read stands, and the whole file comes back. The view stays invalid afterwards.
 */
function tearTheView(): void {
  const tokenDir = join(dir.path, "tokens", readdirSync(join(dir.path, "tokens"))[0]!);
  const tokenFile = join(tokenDir, "token.object");
  const generationFile = join(tokenDir, "generation");
  const whole = readFileSync(tokenFile);
  writeFileSync(tokenFile, bumpGeneration(whole).subarray(0, 20));
  expect(() => findTokenSlot(held, LABEL)).toThrow(/list tokens/);
  writeFileSync(generationFile, bumpGeneration(readFileSync(generationFile)));
  expect(() => findTokenSlot(held, LABEL)).toThrow(/list tokens/);
  writeFileSync(tokenFile, whole);
  // The file is whole again, but this process no longer reads it.
  expect(() => findTokenSlot(held, LABEL)).toThrow(/list tokens/);
}

/** Another process generates (or finds) `label` with the built keystore; its SPKI and a signature. */
function inAnotherProcess(label: string, action: "generate" | "generate-ed25519" | "find"): { found: boolean; spki: string; sig: string } {
  const script = fileURLToPath(new URL("./find-key-child.mjs", import.meta.url));
  const out = execFileSync(process.execPath, [script, confPath, modulePath, LABEL, PIN, label, "from the other process", action], { encoding: "utf8" });
  return JSON.parse(out) as { found: boolean; spki: string; sig: string };
}

const spkiOf = (key: { export(o: { type: "spki"; format: "der" }): Buffer }) => key.export({ type: "spki", format: "der" }).toString("base64");

describe("a stale SoftHSM2 view of the token", () => {
  it("a key recorded elsewhere is found after the keystore reloads the module; earlier keys still sign", async () => {
    ks = await openPkcs11KeyStore({ modulePath, tokenLabel: LABEL, pin: PIN, sessions: 3 });
    const earlier = await ks.generate("earlier", "ec-p256");
    tearTheView();
    const made = inAnotherProcess("made-elsewhere", "generate");
    expect(made.found).toBe(true);

    // Not told the key is recorded, the keystore answers from its stale view.
    expect(await ks.find("made-elsewhere")).toBeUndefined();
    expect(ks.viewsReloaded).toBe(0);
    // Told, it reads the token again once and finds the other process's key.
    const found = await ks.find("made-elsewhere", { recorded: true });
    expect(ks.viewsReloaded).toBe(1);
    expect(found && spkiOf(found.publicKey)).toBe(made.spki);
    const sig = await found!.sign(Buffer.from("after the reload"), "ecdsa-sha384");
    expect(verify("sha384", Buffer.from("after the reload"), { key: found!.publicKey, dsaEncoding: "ieee-p1363" }, sig)).toBe(true);
    expect(verify("sha384", Buffer.from("from the other process"), { key: found!.publicKey, dsaEncoding: "ieee-p1363" }, Buffer.from(made.sig, "base64"))).toBe(true);
    // The signer from before the reload still signs: its sessions were replaced, its key looked up again.
    const before = await earlier.sign(Buffer.from("x"), "ecdsa-sha256");
    expect(verify("sha256", Buffer.from("x"), { key: earlier.publicKey, dsaEncoding: "ieee-p1363" }, before)).toBe(true);
    expect(findTokenSlot(held, LABEL)).toBeDefined();
  });

  it("a key truly missing is still missing after one reload, and concurrent finds share that reload", async () => {
    const before = ks!.viewsReloaded;
    const answers = await Promise.all([ks!.find("never-made", { recorded: true }), ks!.find("never-made-either", { recorded: true })]);
    expect(answers).toEqual([undefined, undefined]);
    expect(ks!.viewsReloaded - before).toBe(1);
  });

  it("a key generated in a stale view is generated after a reload, and another process finds it", async () => {
    tearTheView();
    const before = ks!.viewsReloaded;
    const made = await ks!.generate("made-in-stale-view", "ec-p384");
    expect(ks!.viewsReloaded - before).toBe(1);
    const elsewhere = inAnotherProcess("made-in-stale-view", "find");
    expect(elsewhere.found).toBe(true);
    expect(elsewhere.spki).toBe(spkiOf(made.publicKey));
  });

  it("the transparency log key another process made before signing is used, not made a second time", async () => {
    const origin = "example.org/stale-view-log";
    tearTheView();
    const made = inAnotherProcess(logKeyLabel(origin), "generate-ed25519");
    // Nothing signed yet: no record says the key exists, and the stale view does not show it.
    const key = await openLogKey(ks!, origin, false);
    expect(spkiOf((await ks!.find(key.label))!.publicKey)).toBe(made.spki);
    // Its verifier key (what GET /log/key serves) carries the other process's public key.
    const raw = Buffer.from(made.spki, "base64").subarray(-32);
    expect(key.verifierKey.endsWith(Buffer.concat([Buffer.from([1]), raw]).toString("base64"))).toBe(true);
    expect((await ks!.listKeyObjects(key.label)).map((o) => o.objectClass)).toEqual(["private-key", "public-key"]);
  });

  it("a keystore opened while the process's view is stale reloads the module instead of calling the token missing", async () => {
    await ks!.close();
    ks = undefined;
    tearTheView();
    const made = inAnotherProcess("made-while-stale", "generate");
    ks = await openPkcs11KeyStore({ modulePath, tokenLabel: LABEL, pin: PIN, sessions: 2 });
    const found = await ks.find("made-while-stale");
    expect(found && spkiOf(found.publicKey)).toBe(made.spki);
  });

  it("a token that is not there is still called missing, after the reloads", async () => {
    await expect(openPkcs11KeyStore({ modulePath, tokenLabel: "no-such-token", pin: PIN })).rejects.toMatchObject({ code: "hsm_token_not_found" });
  });
});
