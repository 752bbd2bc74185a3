import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { openPkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import { ensureSoftHsmToken, findSoftHsmModule } from "../../src/hsm/softhsm.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("softhsm");
afterAll(() => dir.remove());

/** Labels of initialised tokens, as SoftHSM's own tool lists them for this configuration. */
function tokenLabels(confPath: string): string[] {
  const out = execFileSync("softhsm2-util", ["--show-slots"], { env: { ...process.env, SOFTHSM2_CONF: confPath }, encoding: "utf8" });
  return [...out.matchAll(/^\s*Label:\s*(\S.*?)\s*$/gm)].map((m) => m[1]!);
}

describe("SoftHSM2 bootstrap", () => {
  it("finds the installed module", () => {
    const path = findSoftHsmModule();
    expect(path).toMatch(/libsofthsm2\.so$/);
    expect(existsSync(path)).toBe(true);
  });

  it("writes its own configuration, points SOFTHSM2_CONF at it, and makes a token the PIN opens", async () => {
    const { confPath, modulePath } = await ensureSoftHsmToken({ dir: dir.path, label: "boot", pin: "user-pin-1", soPin: "so-pin-1" });
    expect(confPath).toBe(join(dir.path, "softhsm2.conf"));
    expect(process.env.SOFTHSM2_CONF).toBe(confPath);
    const conf = readFileSync(confPath, "utf8");
    expect(conf).toContain(`directories.tokendir = ${join(dir.path, "tokens")}`);
    expect(conf).toContain("objectstore.backend = file");
    expect(conf).toContain("log.level = ERROR");
    expect(statSync(join(dir.path, "tokens")).mode & 0o077).toBe(0);
    expect(tokenLabels(confPath)).toEqual(["boot"]);
    const ks = await openPkcs11KeyStore({ modulePath, tokenLabel: "boot", pin: "user-pin-1", sessions: 1 });
    try {
      await ks.generate("survivor", "ec-p256");
    } finally {
      await ks.close();
    }
    await expect(openPkcs11KeyStore({ modulePath, tokenLabel: "boot", pin: "so-pin-1" })).rejects.toMatchObject({ code: "hsm_login_failed" });
  });

  it("is idempotent: a second call reuses the token and its keys, a new label gets a token of its own", async () => {
    const again = await ensureSoftHsmToken({ dir: dir.path, label: "boot", pin: "user-pin-1", soPin: "so-pin-1" });
    expect(tokenLabels(again.confPath)).toEqual(["boot"]);
    const ks = await openPkcs11KeyStore({ modulePath: again.modulePath, tokenLabel: "boot", pin: "user-pin-1", sessions: 1 });
    try {
      expect(await ks.find("survivor")).toBeDefined();
    } finally {
      await ks.close();
    }
    await ensureSoftHsmToken({ dir: dir.path, label: "second", pin: "user-pin-2", soPin: "so-pin-2" });
    expect(tokenLabels(again.confPath).sort()).toEqual(["boot", "second"]);
  });

  it("works while a keystore of this process holds the module open, without closing it", async () => {
    const { modulePath } = await ensureSoftHsmToken({ dir: dir.path, label: "boot", pin: "user-pin-1", soPin: "so-pin-1" });
    const ks = await openPkcs11KeyStore({ modulePath, tokenLabel: "boot", pin: "user-pin-1", sessions: 1 });
    try {
      const { confPath } = await ensureSoftHsmToken({ dir: dir.path, label: "third", pin: "user-pin-3", soPin: "so-pin-3" });
      expect(tokenLabels(confPath)).toContain("third");
      const signer = (await ks.find("survivor"))!;
      expect((await signer.sign(Buffer.from("still open"), "ecdsa-sha256")).length).toBe(64);
    } finally {
      await ks.close();
    }
  });

  it("reports a PIN SoftHSM refuses as hsm_login_failed, without the PIN, and a later call finishes the token", async () => {
    const err = await ensureSoftHsmToken({ dir: dir.path, label: "short", pin: "1", soPin: "so-pin-4" }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: "HallmarkError", code: "hsm_login_failed" });
    expect(JSON.stringify({ m: (err as Error).message, i: (err as { internal?: string }).internal })).not.toMatch(/so-pin-4|"1"/);
    const { modulePath } = await ensureSoftHsmToken({ dir: dir.path, label: "short", pin: "long-enough", soPin: "so-pin-4" });
    const ks = await openPkcs11KeyStore({ modulePath, tokenLabel: "short", pin: "long-enough", sessions: 1 });
    await ks.close();
  });
});
