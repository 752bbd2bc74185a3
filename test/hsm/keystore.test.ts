import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { type KeyObject, type VerifyKeyObjectInput, constants, verify } from "node:crypto";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import pkcs11js from "pkcs11js";
import { openPkcs11KeyStore, type Pkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import type { KeyType, SignatureScheme, Signer } from "../../src/hsm/signer.js";
import { ensureSoftHsmToken } from "../../src/hsm/softhsm.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("hsm");
const PIN = "1234-test";
let modulePath: string;
let confPath: string;
let ks: Pkcs11KeyStore;

beforeAll(async () => {
  ({ modulePath, confPath } = await ensureSoftHsmToken({ dir: dir.path, label: "test", pin: PIN, soPin: "5678-so" }));
  ks = await openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: PIN, sessions: 4 });
});
afterAll(async () => {
  await ks?.close();
  dir.remove();
});

/** How node:crypto verifies each scheme: written from the scheme definitions, not from our code. */
function verifyInput(scheme: SignatureScheme, key: KeyObject): { hash: string; key: VerifyKeyObjectInput } {
  switch (scheme) {
    case "ecdsa-sha256":
      return { hash: "sha256", key: { key, dsaEncoding: "ieee-p1363" } };
    case "ecdsa-sha384":
      return { hash: "sha384", key: { key, dsaEncoding: "ieee-p1363" } };
    case "rsa-pkcs1-sha256":
      return { hash: "sha256", key: { key, padding: constants.RSA_PKCS1_PADDING } };
    case "rsa-pkcs1-sha384":
      return { hash: "sha384", key: { key, padding: constants.RSA_PKCS1_PADDING } };
    case "rsa-pss-sha256":
      return { hash: "sha256", key: { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } };
    case "rsa-pss-sha384":
      return { hash: "sha384", key: { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 } };
  }
}

function verifies(signer: Signer, scheme: SignatureScheme, data: Uint8Array, sig: Uint8Array): boolean {
  const v = verifyInput(scheme, signer.publicKey);
  return verify(v.hash, data, v.key, sig);
}

/**
 * Private-key session objects labelled `label` in this process, looked up on a session of our
 * own (session objects are visible to every session of the application that made them).
 */
function sessionCopiesLabelled(label: string): number {
  const p11 = new pkcs11js.PKCS11();
  p11.load(modulePath);
  try {
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === "test")!;
    const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    try {
      p11.C_FindObjectsInit(session, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
        { type: pkcs11js.CKA_LABEL, value: label },
        { type: pkcs11js.CKA_TOKEN, value: false },
      ]);
      const found = p11.C_FindObjects(session, 8).length;
      p11.C_FindObjectsFinal(session);
      return found;
    } finally {
      p11.C_CloseSession(session);
    }
  } finally {
    p11.close();
  }
}

const ALL_SCHEMES: SignatureScheme[] = ["ecdsa-sha256", "ecdsa-sha384", "rsa-pkcs1-sha256", "rsa-pkcs1-sha384", "rsa-pss-sha256", "rsa-pss-sha384"];
const CASES: Array<[KeyType, { size: number; curve?: string; bits?: number }]> = [
  ["ec-p256", { size: 64, curve: "prime256v1" }],
  ["ec-p384", { size: 96, curve: "secp384r1" }],
  ["rsa-2048", { size: 256, bits: 2048 }],
  ["rsa-3072", { size: 384, bits: 3072 }],
];
const fits = (keyType: KeyType, scheme: SignatureScheme) => keyType.startsWith("ec-") === scheme.startsWith("ecdsa-");

describe("PKCS#11 keystore on SoftHSM2", () => {
  it.each(CASES)("generates a %s key that signs with every fitting scheme, node:crypto verifying", async (keyType, expected) => {
    const signer = await ks.generate(`k-${keyType}`, keyType);
    expect(signer.keyType).toBe(keyType);
    expect(signer.label).toBe(`k-${keyType}`);
    const details = signer.publicKey.asymmetricKeyDetails;
    if (expected.curve) expect(details?.namedCurve).toBe(expected.curve);
    if (expected.bits) {
      expect(details?.modulusLength).toBe(expected.bits);
      expect(details?.publicExponent).toBe(65537n);
    }
    for (const scheme of ALL_SCHEMES.filter((s) => fits(keyType, s))) {
      const data = Buffer.from(`message for ${scheme}`);
      const sig = await signer.sign(data, scheme);
      expect(sig.length).toBe(expected.size);
      expect(verifies(signer, scheme, data, sig)).toBe(true);
      expect(verifies(signer, scheme, Buffer.from("another message"), sig)).toBe(false);
    }
  });

  it("refuses every scheme that does not fit the key type", async () => {
    for (const [keyType] of CASES) {
      const signer = (await ks.find(`k-${keyType}`))!;
      for (const scheme of ALL_SCHEMES.filter((s) => !fits(keyType, s))) {
        await expect(signer.sign(Buffer.from("x"), scheme)).rejects.toMatchObject({ name: "HallmarkError", code: "hsm_scheme_mismatch" });
      }
    }
  });

  it("signatures over random messages verify, and fail once any bit of message or signature flips", async () => {
    const ec = (await ks.find("k-ec-p256"))!;
    const rsa = (await ks.find("k-rsa-2048"))!;
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 0, maxLength: 512 }),
        fc.constantFrom<[Signer, SignatureScheme]>([ec, "ecdsa-sha256"], [rsa, "rsa-pss-sha256"], [rsa, "rsa-pkcs1-sha256"]),
        fc.nat(),
        async (data, [signer, scheme], flip) => {
          const sig = await signer.sign(data, scheme);
          expect(verifies(signer, scheme, data, sig)).toBe(true);
          const badSig = Buffer.from(sig);
          badSig[(flip >> 3) % badSig.length]! ^= 1 << (flip & 7);
          expect(verifies(signer, scheme, data, badSig)).toBe(false);
          if (data.length > 0) {
            const badData = Buffer.from(data);
            badData[(flip >> 3) % badData.length]! ^= 1 << (flip & 7);
            expect(verifies(signer, scheme, badData, sig)).toBe(false);
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it.each(CASES)("keeps the %s private key sensitive and non-extractable; its value cannot be read", async (keyType) => {
    expect(await ks.describeKey(`k-${keyType}`)).toEqual({
      sensitive: true,
      extractable: false,
      neverExtractable: true,
      alwaysSensitive: true,
      token: true,
      valueReadable: false,
    });
  });

  it.each(CASES)("signs with a session copy of the %s key that is as protected as the token key, and not a second token key", async (keyType) => {
    expect(ks.sessionCopies).toBe(true);
    expect(await ks.describeKey(`k-${keyType}`, { signingHandle: true })).toEqual({
      sensitive: true,
      extractable: false,
      neverExtractable: true,
      alwaysSensitive: true,
      token: false,
      valueReadable: false,
    });
    // The copy is no token object: a lookup by label, the listing and reconciliation see one key.
    expect((await ks.listKeyObjects(`k-${keyType}`)).map((o) => o.objectClass)).toEqual(["private-key", "public-key"]);
  });

  it("with session copies off, signs with the token key itself", async () => {
    const direct = await openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: PIN, sessions: 1, sessionCopies: false });
    try {
      expect(direct.sessionCopies).toBe(false);
      expect(await direct.describeKey("k-ec-p256", { signingHandle: true })).toMatchObject({ token: true, sensitive: true, extractable: false });
      const signer = (await direct.find("k-ec-p256"))!;
      expect(verifies(signer, "ecdsa-sha256", Buffer.from("direct"), await signer.sign(Buffer.from("direct"), "ecdsa-sha256"))).toBe(true);
    } finally {
      await direct.close();
    }
  });

  it("a session copy gone with its session is made again; a destroyed key's copy no longer signs", async () => {
    const signer = (await ks.find("k-ec-p256"))!;
    const sign = () => signer.sign(Buffer.from("copy"), "ecdsa-sha256");
    expect(verifies(signer, "ecdsa-sha256", Buffer.from("copy"), await sign())).toBe(true);
    const reopenedBefore = ks.sessionsReopened;
    // Every idle session closed: the copies made in them are gone with them.
    expect(ks.dropIdleSessionsForTest()).toBeGreaterThan(0);
    expect(verifies(signer, "ecdsa-sha256", Buffer.from("copy"), await sign())).toBe(true);
    expect(ks.sessionsReopened).toBeGreaterThan(reopenedBefore);

    const doomed = await ks.generate("copy-destroyed", "ec-p256");
    await doomed.sign(Buffer.from("x"), "ecdsa-sha256");
    expect(sessionCopiesLabelled("copy-destroyed")).toBe(1);
    await ks.destroy("copy-destroyed");
    expect(sessionCopiesLabelled("copy-destroyed")).toBe(0);
    await expect(doomed.sign(Buffer.from("x"), "ecdsa-sha256")).rejects.toMatchObject({ code: "hsm_key_not_found" });
  });

  it("describeKey reads the token, not constants: a key made sensitive=false, extractable=true shows it", async () => {
    const other = new pkcs11js.PKCS11();
    other.load(modulePath);
    expect(() => other.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })).toThrow(/CKR_CRYPTOKI_ALREADY_INITIALIZED/);
    const slot = other.C_GetSlotList(true).find((s) => other.C_GetTokenInfo(s).label.trim() === "test")!;
    const session = other.C_OpenSession(slot, pkcs11js.CKF_RW_SESSION | pkcs11js.CKF_SERIAL_SESSION);
    const common = [
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_LABEL, value: "weak" },
    ];
    other.C_GenerateKeyPair(
      session,
      { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      [...common, { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from("06082a8648ce3d030107", "hex") }],
      [...common, { type: pkcs11js.CKA_PRIVATE, value: true }, { type: pkcs11js.CKA_SENSITIVE, value: false }, { type: pkcs11js.CKA_EXTRACTABLE, value: true }],
    );
    other.C_CloseSession(session);
    other.close();
    try {
      expect(await ks.describeKey("weak")).toMatchObject({ sensitive: false, extractable: true, valueReadable: true });
    } finally {
      await ks.destroy("weak");
    }
  });

  it("signs an empty message with RSA (SoftHSM2 refuses C_Sign over zero bytes)", async () => {
    const rsa = (await ks.find("k-rsa-2048"))!;
    for (const scheme of ["rsa-pkcs1-sha256", "rsa-pss-sha384"] as const) {
      expect(verifies(rsa, scheme, Buffer.alloc(0), await rsa.sign(new Uint8Array(0), scheme))).toBe(true);
    }
  });

  it("refuses a duplicate label and leaves the first key in place", async () => {
    const before = (await ks.find("k-ec-p256"))!;
    await expect(ks.generate("k-ec-p256", "ec-p256")).rejects.toMatchObject({ code: "hsm_key_exists" });
    await expect(ks.generate("k-ec-p256", "rsa-2048")).rejects.toMatchObject({ code: "hsm_key_exists" });
    const after = (await ks.find("k-ec-p256"))!;
    expect(after.publicKey.equals(before.publicKey)).toBe(true);
  });

  it("lets only one of two concurrent generations of one label through, and refuses an unknown key type", async () => {
    const results = await Promise.allSettled([ks.generate("raced", "ec-p256"), ks.generate("raced", "ec-p384")]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(results.find((r) => r.status === "rejected")).toMatchObject({ reason: { code: "hsm_key_exists" } });
    await ks.destroy("raced");
    await expect(ks.generate("odd", "ec-p521" as KeyType)).rejects.toMatchObject({ code: "hsm_key_type_unsupported" });
    expect(await ks.find("odd")).toBeUndefined();
  });

  it("signs 200 times concurrently across the pool, every signature valid", async () => {
    const signer = (await ks.find("k-ec-p256"))!;
    const sigs = await Promise.all(Array.from({ length: 200 }, (_, i) => signer.sign(Buffer.from(`m${i}`), "ecdsa-sha256")));
    sigs.forEach((s, i) => expect(verifies(signer, "ecdsa-sha256", Buffer.from(`m${i}`), s)).toBe(true));
  });

  it("reopens sessions closed behind its back and still signs", async () => {
    const signer = (await ks.find("k-ec-p256"))!;
    const reopenedBefore = ks.sessionsReopened;
    const dropped = ks.dropIdleSessionsForTest();
    expect(dropped).toBe(4);
    const sigs = await Promise.all(Array.from({ length: 8 }, (_, i) => signer.sign(Buffer.from(`after drop ${i}`), "ecdsa-sha256")));
    sigs.forEach((s, i) => expect(verifies(signer, "ecdsa-sha256", Buffer.from(`after drop ${i}`), s)).toBe(true));
    expect(ks.sessionsReopened - reopenedBefore).toBe(dropped);
  });

  it("logs in again when the application was logged out behind its back", async () => {
    const signer = (await ks.find("k-ec-p256"))!;
    // A second handle on the same, already initialised module: logout is per application.
    const other = new pkcs11js.PKCS11();
    other.load(modulePath);
    expect(() => other.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })).toThrow(/CKR_CRYPTOKI_ALREADY_INITIALIZED/);
    const slot = other.C_GetSlotList(true).find((s) => other.C_GetTokenInfo(s).label.trim() === "test")!;
    const session = other.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    other.C_Logout(session);
    other.C_CloseSession(session);
    other.close();
    const reopenedBefore = ks.sessionsReopened;
    const sig = await signer.sign(Buffer.from("after logout"), "ecdsa-sha256");
    expect(verifies(signer, "ecdsa-sha256", Buffer.from("after logout"), sig)).toBe(true);
    expect(ks.sessionsReopened).toBeGreaterThan(reopenedBefore);
  });

  it("signs synchronously when asked, sharing the module with the first store, and closes without disturbing it", async () => {
    const sync = await openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: PIN, sessions: 2, signing: "sync" });
    try {
      const signer = (await sync.find("k-ec-p384"))!;
      const sig = await signer.sign(Buffer.from("sync"), "ecdsa-sha384");
      expect(verifies(signer, "ecdsa-sha384", Buffer.from("sync"), sig)).toBe(true);
    } finally {
      await sync.close();
    }
    // The user is logged in already, so the token would not check this PIN: the store does.
    await expect(openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: "wrong-while-open" })).rejects.toMatchObject({ code: "hsm_login_failed" });
    const first = (await ks.find("k-ec-p256"))!;
    const sig = await first.sign(Buffer.from("still open"), "ecdsa-sha256");
    expect(verifies(first, "ecdsa-sha256", Buffer.from("still open"), sig)).toBe(true);
  });

  it("signs on the event loop with SoftHSM2 by default and on the thread pool when asked", async () => {
    // "auto": SoftHSM2 is a library computing in our process, so the thread hop would only add work.
    expect(ks.signing).toBe("sync");
    const pooled = await openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: PIN, sessions: 2, signing: "async" });
    try {
      expect(pooled.signing).toBe("async");
      const signer = (await pooled.find("k-ec-p256"))!;
      const messages = Array.from({ length: 8 }, (_, i) => Buffer.from(`async ${i}`));
      // More signatures in flight than sessions: the pool queues them, each still verifies.
      const sigs = await Promise.all(messages.map((m) => signer.sign(m, "ecdsa-sha256")));
      sigs.forEach((sig, i) => expect(verifies(signer, "ecdsa-sha256", messages[i]!, sig)).toBe(true));
    } finally {
      await pooled.close();
    }
  });

  it("finds the same key again from another process, which signs with it", async () => {
    const signer = (await ks.find("k-ec-p384"))!;
    const script = fileURLToPath(new URL("./find-key-child.mjs", import.meta.url));
    const out = execFileSync(process.execPath, [script, confPath, modulePath, "test", PIN, "k-ec-p384", "from the child"], { encoding: "utf8" });
    const child = JSON.parse(out) as { found: boolean; keyType: string; spki: string; sig: string };
    expect(child.found).toBe(true);
    expect(child.keyType).toBe("ec-p384");
    expect(child.spki).toBe(signer.publicKey.export({ type: "spki", format: "der" }).toString("base64"));
    expect(verifies(signer, "ecdsa-sha384", Buffer.from("from the child"), Buffer.from(child.sig, "base64"))).toBe(true);
    expect(await ks.find("missing")).toBeUndefined();
  });

  it("destroys a key: it is gone, and a signer still holding it fails with hsm_key_not_found", async () => {
    const doomed = await ks.generate("to-destroy", "ec-p256");
    await ks.destroy("to-destroy");
    expect(await ks.find("to-destroy")).toBeUndefined();
    await expect(doomed.sign(Buffer.from("x"), "ecdsa-sha256")).rejects.toMatchObject({ code: "hsm_key_not_found" });
    await expect(ks.describeKey("to-destroy")).rejects.toMatchObject({ code: "hsm_key_not_found" });
  });

  it("finds the same keys after close and reopen in this process", async () => {
    const before = await Promise.all(CASES.map(([t]) => ks.find(`k-${t}`)));
    await ks.close();
    await expect(before[0]!.sign(Buffer.from("x"), "ecdsa-sha256")).rejects.toMatchObject({ code: "hsm_unavailable" });
    ks = await openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: PIN });
    for (const [i, [t]] of CASES.entries()) {
      const again = (await ks.find(`k-${t}`))!;
      expect(again.keyType).toBe(t);
      expect(again.publicKey.equals(before[i]!.publicKey)).toBe(true);
    }
    const ec = (await ks.find("k-ec-p256"))!;
    expect(verifies(ec, "ecdsa-sha256", Buffer.from("reopened"), await ec.sign(Buffer.from("reopened"), "ecdsa-sha256"))).toBe(true);
  });

  it("reports a wrong PIN, a missing token and a missing module with their codes, never the PIN", async () => {
    await ks.close();
    const wrong = await openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: "not-the-pin" }).catch((e: unknown) => e);
    expect(wrong).toMatchObject({ name: "HallmarkError", code: "hsm_login_failed" });
    expect(JSON.stringify({ message: (wrong as Error).message, internal: (wrong as { internal?: string }).internal })).not.toContain("not-the-pin");
    await expect(openPkcs11KeyStore({ modulePath, tokenLabel: "absent", pin: PIN })).rejects.toMatchObject({ code: "hsm_token_not_found" });
    await expect(openPkcs11KeyStore({ modulePath: "/nonexistent/libpkcs11.so", tokenLabel: "test", pin: PIN })).rejects.toMatchObject({
      code: "hsm_module_not_found",
    });
    // A file that is not a PKCS#11 module.
    await expect(openPkcs11KeyStore({ modulePath: confPath, tokenLabel: "test", pin: PIN })).rejects.toMatchObject({ code: "hsm_module_not_found" });
    ks = await openPkcs11KeyStore({ modulePath, tokenLabel: "test", pin: PIN });
    expect(await ks.find("k-ec-p256")).toBeDefined();
  });
});
