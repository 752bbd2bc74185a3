import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verify } from "node:crypto";
import { openPkcs11KeyStore, type Pkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import { ensureSoftHsmToken } from "../../src/hsm/softhsm.js";
import { ed25519NoteSigner, ed25519VerifierKey, openNote, parseVerifierKey, signNote } from "../../src/transparency/note.js";
import { tempDir } from "../helpers/tmp.js";

/** The transparency log's key: Ed25519 generated and used inside a real SoftHSM2 token (CKM_EDDSA). */
const dir = tempDir("hsm-ed25519");
const PIN = "1234-test";
let modulePath: string;
let ks: Pkcs11KeyStore;

beforeAll(async () => {
  ({ modulePath } = await ensureSoftHsmToken({ dir: dir.path, label: "tlog", pin: PIN, soPin: "5678-so" }));
  ks = await openPkcs11KeyStore({
    modulePath,
    tokenLabel: "tlog",
    pin: PIN,
    sessions: 2,
    // The start-up mechanism check names the Edwards mechanisms pkcs11js has no constants for.
    requiredKeyUses: [{ purpose: "log.keyType", keyType: "ed25519", scheme: "ed25519" }],
  });
});
afterAll(async () => {
  await ks?.close();
  dir.remove();
});

describe("Ed25519 in the HSM", () => {
  it("generates a sensitive, non-extractable Ed25519 key whose signatures node:crypto verifies", async () => {
    const signer = await ks.generate("tlog-key-1", "ed25519");
    expect(signer.keyType).toBe("ed25519");
    expect(signer.publicKey.asymmetricKeyType).toBe("ed25519");
    const attrs = await ks.describeKey("tlog-key-1");
    expect(attrs).toMatchObject({ sensitive: true, extractable: false, neverExtractable: true, alwaysSensitive: true, token: true, valueReadable: false });
    const message = Buffer.from("example.org/log\n42\n" + "A".repeat(43) + "=\n");
    const sig = await signer.sign(message, "ed25519");
    expect(sig.length).toBe(64);
    expect(verify(null, message, signer.publicKey, sig)).toBe(true);
    const flipped = Buffer.from(message);
    flipped[0]! ^= 1;
    expect(verify(null, flipped, signer.publicKey, sig)).toBe(false);
  });

  it("is found again by label after the key store reopens, with the same public key", async () => {
    const first = await ks.find("tlog-key-1");
    const again = await openPkcs11KeyStore({ modulePath, tokenLabel: "tlog", pin: PIN, sessions: 1 });
    try {
      const found = await again.find("tlog-key-1");
      expect(found?.keyType).toBe("ed25519");
      expect(found!.publicKey.export({ format: "jwk" })).toEqual(first!.publicKey.export({ format: "jwk" }));
      const sig = await found!.sign(Buffer.from("hello\n"), "ed25519");
      expect(verify(null, Buffer.from("hello\n"), first!.publicKey, sig)).toBe(true);
    } finally {
      await again.close();
    }
  });

  it("refuses to mix Ed25519 with the hashed schemes, either way round", async () => {
    const ed = (await ks.find("tlog-key-1"))!;
    await expect(ed.sign(Buffer.from("x"), "ecdsa-sha256")).rejects.toMatchObject({ code: "hsm_scheme_mismatch" });
    await expect(ed.sign(Buffer.alloc(0), "ed25519")).rejects.toMatchObject({ code: "hsm_scheme_mismatch" });
    const ec = await ks.generate("tlog-ec", "ec-p256");
    await expect(ec.sign(Buffer.from("x"), "ed25519")).rejects.toMatchObject({ code: "hsm_scheme_mismatch" });
    // The existing key types still sign as before.
    const sig = await ec.sign(Buffer.from("x"), "ecdsa-sha256");
    expect(verify("sha256", Buffer.from("x"), { key: ec.publicKey, dsaEncoding: "ieee-p1363" }, sig)).toBe(true);
  });

  it("signs a C2SP signed note through the NoteSigner port, verified by its verifier key string", async () => {
    const signer = ed25519NoteSigner("example.org/log", (await ks.find("tlog-key-1"))!);
    const note = await signNote("example.org/log\n1\nbjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=\n", [signer]);
    const vkey = ed25519VerifierKey("example.org/log", (await ks.find("tlog-key-1"))!.publicKey);
    expect(openNote(note, [parseVerifierKey(vkey)]).verified).toHaveLength(1);
  });
});
