import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { HallmarkError } from "../errors.js";
import { type Handle, type Pkcs11, acquireModule, findTokenSlot, findTokenSlotReloading, hsmError, pkcs11js, releaseModule } from "./pkcs11-module.js";

const MODULE_CANDIDATES = [
  "/usr/lib/softhsm/libsofthsm2.so",
  "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
  "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
  "/usr/local/lib/softhsm/libsofthsm2.so",
];

export function findSoftHsmModule(): string {
  const found = MODULE_CANDIDATES.find((p) => existsSync(p));
  if (!found) throw new HallmarkError("hsm_module_not_found", "SoftHSM2 is not installed (no libsofthsm2.so); run scripts/install-deps.sh");
  return found;
}

/** Options of ensureSoftHsmToken: create a token when none has the label, or require one (no PINs needed then). */
export type SoftHsmTokenOptions = { dir: string; label: string } & (
  | { pin: string; soPin: string; requiredBecause?: undefined }
  | {
      /**
       * Why the token must exist already (e.g. "the database records CA keys in it"). When it
       * does not, the call refuses and creates nothing: no token, no token directory. A new empty
       * token under the same label would shadow the real one once it is restored from a backup.
       */
      requiredBecause: string;
    }
);

/**
 * Development and tests only, never with a real HSM: a SoftHSM2 token in a directory of our own.
 *
 * Writes <dir>/softhsm2.conf and points SOFTHSM2_CONF at it. SoftHSM reads that variable when
 * the module is initialised, and a process has one initialised copy of the module: call this
 * before the first openPkcs11KeyStore of the process (or after every keystore is closed), and
 * use one token directory per process.
 *
 * The token is initialised through PKCS#11 itself (C_InitToken on the free slot, then
 * C_InitPIN), not with `softhsm2-util --init-token`: softhsm2-util takes PINs only on its
 * command line (visible to `ps`) or from a terminal, not from a pipe. Idempotent: a token with
 * this label is reused, never initialised twice.
 */
export async function ensureSoftHsmToken(opts: SoftHsmTokenOptions): Promise<{ confPath: string; modulePath: string }> {
  const tokens = join(opts.dir, "tokens");
  if (opts.requiredBecause !== undefined && !existsSync(tokens)) throw tokenMissing(opts.label, tokens, opts.requiredBecause);
  mkdirSync(tokens, { recursive: true, mode: 0o700 });
  const confPath = join(opts.dir, "softhsm2.conf");
  writeFileSync(confPath, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`, { mode: 0o600 });
  process.env.SOFTHSM2_CONF = confPath;
  const modulePath = findSoftHsmModule();

  const pkcs11 = acquireModule(modulePath);
  try {
    // One process (the development server before its workers): reloaded at once, no waiting, as a
    // missing token is the usual case on a first start.
    const found = await findTokenSlotReloading(pkcs11, opts.label, [0, 0]);
    if (opts.requiredBecause !== undefined) {
      if (!found) throw tokenMissing(opts.label, tokens, opts.requiredBecause);
    } else {
      const slot = found ?? initToken(pkcs11, opts);
      // A token whose user PIN was never set (an earlier attempt failed half-way) is finished, not skipped.
      if ((pkcs11.C_GetTokenInfo(slot).flags & pkcs11js.CKF_USER_PIN_INITIALIZED) === 0) initUserPin(pkcs11, slot, opts);
    }
  } catch (e) {
    throw hsmError(e, `prepare SoftHSM2 token '${opts.label}'`);
  } finally {
    releaseModule(pkcs11);
  }
  return { confPath, modulePath };
}

/**
 * `hallmark hsm init`: a new token in an operator's SoftHSM2 installation (the token directory
 * its softhsm2.conf names, through SOFTHSM2_CONF or /etc/softhsm/softhsm2.conf), the same way
 * ensureSoftHsmToken makes the development one: C_InitToken, then C_InitPIN, PINs never on a
 * command line. Refuses a module that is not SoftHSM2 (a vendor HSM's tokens are set up with
 * the vendor's tools) and a label already in use, so it cannot re-initialise a token holding keys.
 */
export function initSoftHsmToken(o: { modulePath: string; label: string; pin: string; soPin: string }): void {
  const pkcs11 = acquireModule(o.modulePath);
  try {
    const info = pkcs11.C_GetInfo();
    if (!/softhsm/i.test(`${info.manufacturerID} ${info.libraryDescription}`)) {
      throw new HallmarkError(
        "hsm_init_unsupported",
        `${o.modulePath} is '${info.libraryDescription.trim()}' by '${info.manufacturerID.trim()}', not SoftHSM2: initialise the token with the vendor's tools`,
      );
    }
    if (findTokenSlot(pkcs11, o.label)) throw new HallmarkError("hsm_token_exists", `a token labelled '${o.label}' exists already; nothing was changed`);
    initUserPin(pkcs11, initToken(pkcs11, o), o);
  } catch (e) {
    throw hsmError(e, `initialise SoftHSM2 token '${o.label}'`);
  } finally {
    releaseModule(pkcs11);
  }
}

function tokenMissing(label: string, tokens: string, requiredBecause: string): HallmarkError {
  return new HallmarkError(
    "hsm_token_not_found",
    `SoftHSM2 token '${label}' is not in ${tokens}, but ${requiredBecause}: restore ${tokens} from your backup and start again (nothing was created)`,
  );
}

function initToken(pkcs11: Pkcs11, opts: { label: string; soPin: string }): Handle {
  const free = pkcs11.C_GetSlotList(true).find((slot) => (pkcs11.C_GetTokenInfo(slot).flags & pkcs11js.CKF_TOKEN_INITIALIZED) === 0);
  if (!free) throw new HallmarkError("hsm_token_not_found", "SoftHSM2 offers no free slot for a new token");
  // C_InitToken wants the label blank-padded to 32 bytes.
  pkcs11.C_InitToken(free, opts.soPin, opts.label.padEnd(32, " "));
  // SoftHSM moves the new token to a slot of its own: find it again by label.
  const slot = findTokenSlot(pkcs11, opts.label);
  if (!slot) throw new HallmarkError("hsm_token_not_found", `SoftHSM2 token '${opts.label}' vanished after initialisation`);
  return slot;
}

function initUserPin(pkcs11: Pkcs11, slot: Handle, opts: { pin: string; soPin: string }): void {
  const session = pkcs11.C_OpenSession(slot, pkcs11js.CKF_RW_SESSION | pkcs11js.CKF_SERIAL_SESSION);
  try {
    pkcs11.C_Login(session, pkcs11js.CKU_SO, opts.soPin);
    try {
      pkcs11.C_InitPIN(session, opts.pin);
    } finally {
      pkcs11.C_Logout(session);
    }
  } finally {
    pkcs11.C_CloseSession(session);
  }
}
