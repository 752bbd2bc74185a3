import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verify } from "node:crypto";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { openPkcs11KeyStore, type Pkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import type { KeyType, SignatureScheme } from "../../src/hsm/signer.js";
import { ensureSoftHsmToken } from "../../src/hsm/softhsm.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("hsm");
const PIN = "1234-test";
let modulePath: string;
let ks: Pkcs11KeyStore;

beforeAll(async () => {
  ({ modulePath } = await ensureSoftHsmToken({ dir: dir.path, label: "test", pin: PIN, soPin: "5678-so" }));
  ks = await openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: PIN, sessions: 4 });
});
afterAll(async () => {
  await ks?.close();
  dir.remove();
});

const VERIFY: Record<SignatureScheme, { hash: string; opts: Record<string, unknown> }> = {
  "ecdsa-sha256": { hash: "sha256", opts: { dsaEncoding: "ieee-p1363" } },
  "ecdsa-sha384": { hash: "sha384", opts: { dsaEncoding: "ieee-p1363" } },
  "rsa-pkcs1-sha256": { hash: "sha256", opts: {} },
  "rsa-pkcs1-sha384": { hash: "sha384", opts: {} },
  "rsa-pss-sha256": { hash: "sha256", opts: { padding: 6, saltLength: 32 } },
  "rsa-pss-sha384": { hash: "sha384", opts: { padding: 6, saltLength: 48 } },
};

const CASES: Array<[KeyType, SignatureScheme[]]> = [
  ["ec-p256", ["ecdsa-sha256", "ecdsa-sha384"]],
  ["ec-p384", ["ecdsa-sha384"]],
  ["rsa-2048", ["rsa-pkcs1-sha256", "rsa-pss-sha256", "rsa-pss-sha384"]],
  ["rsa-3072", ["rsa-pkcs1-sha384"]],
];

describe("PKCS#11 keystore on SoftHSM2", () => {
  it.each(CASES)("generates a %s key whose signatures node:crypto verifies", async (keyType, schemes) => {
    const signer = await ks.generate(`k-${keyType}`, keyType);
    expect(signer.keyType).toBe(keyType);
    for (const scheme of schemes) {
      const data = Buffer.from(`message for ${scheme}`);
      const sig = await signer.sign(data, scheme);
      const v = VERIFY[scheme];
      expect(verify(v.hash, data, { key: signer.publicKey, ...v.opts } as never, Buffer.from(sig))).toBe(true);
      expect(verify(v.hash, Buffer.from("other"), { key: signer.publicKey, ...v.opts } as never, Buffer.from(sig))).toBe(false);
    }
  });

  it("keeps private keys sensitive and non-extractable, and refuses to read their value", async () => {
    const a = await ks.describeKey("k-ec-p256");
    expect(a).toEqual({ sensitive: true, extractable: false, neverExtractable: true, alwaysSensitive: true, token: true, valueReadable: false });
  });

  it("refuses a scheme that does not fit the key, and a duplicate label", async () => {
    const ec = await ks.find("k-ec-p256");
    await expect(ec!.sign(Buffer.from("x"), "rsa-pss-sha256")).rejects.toMatchObject({ code: "hsm_error" });
    await expect(ks.generate("k-ec-p256", "ec-p256")).rejects.toMatchObject({ code: "hsm_error" });
  });

  it("signs 200 times concurrently across the pool, every signature valid", async () => {
    const signer = (await ks.find("k-ec-p256"))!;
    const sigs = await Promise.all(Array.from({ length: 200 }, (_, i) => signer.sign(Buffer.from(`m${i}`), "ecdsa-sha256")));
    sigs.forEach((s, i) => expect(verify("sha256", Buffer.from(`m${i}`), { key: signer.publicKey, dsaEncoding: "ieee-p1363" }, Buffer.from(s))).toBe(true));
  });

  it("reopens a session the token dropped and still signs", async () => {
    const signer = (await ks.find("k-ec-p256"))!;
    ks.dropIdleSessionForTest();
    const results = await Promise.all(Array.from({ length: 8 }, () => signer.sign(Buffer.from("after drop"), "ecdsa-sha256")));
    expect(results).toHaveLength(8);
  });

  it("finds the same key again from another process after a restart", async () => {
    const signer = (await ks.find("k-ec-p384"))!;
    const script = fileURLToPath(new URL("./find-key-child.mjs", import.meta.url));
    const out = execFileSync(process.execPath, [script, modulePath, "test", PIN, "k-ec-p384"], { env: { ...process.env }, encoding: "utf8" });
    expect(out.trim()).toBe(signer.publicKey.export({ type: "spki", format: "der" }).toString("base64"));
    expect(await ks.find("missing")).toBeUndefined();
  });

  it("destroys a key", async () => {
    await ks.generate("to-destroy", "ec-p256");
    await ks.destroy("to-destroy");
    expect(await ks.find("to-destroy")).toBeUndefined();
  });

  it("reports a wrong PIN, a missing token and a missing module with their codes, never the PIN", async () => {
    await ks.close();
    const wrong = openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: "not-the-pin" });
    await expect(wrong).rejects.toMatchObject({ code: "hsm_login_failed" });
    await expect(wrong).rejects.not.toThrow(/not-the-pin/);
    await expect(openPkcs11KeyStore({ modulePath, tokenLabel: "absent", pin: PIN })).rejects.toMatchObject({ code: "hsm_token_not_found" });
    await expect(openPkcs11KeyStore({ modulePath: "/nonexistent/libpkcs11.so", tokenLabel: "test", pin: PIN })).rejects.toMatchObject({ code: "hsm_module_not_found" });
    ks = await openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: PIN });
    expect(await ks.find("k-ec-p256")).toBeDefined();
  });

  it("initialises a token once and reuses it", async () => {
    const again = await ensureSoftHsmToken({ dir: dir.path, label: "test", pin: PIN, soPin: "5678-so" });
    expect(again.modulePath).toBe(modulePath);
    expect(await ks.find("k-ec-p256")).toBeDefined();
  });
});
