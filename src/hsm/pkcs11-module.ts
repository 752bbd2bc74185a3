import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync } from "node:fs";
import pkcs11js from "pkcs11js";
import { HallmarkError } from "../errors.js";

/**
 * Loading a PKCS#11 module and finding a token: the only place (with the keystore) that knows
 * PKCS#11. Errors from the module become HallmarkErrors with an hsm_* code; a PIN never appears
 * in a message.
 */
export type Pkcs11 = pkcs11js.PKCS11;
export type Handle = Buffer;
export { pkcs11js };

const PIN_ERRORS = new Set([pkcs11js.CKR_PIN_INCORRECT, pkcs11js.CKR_PIN_LEN_RANGE, pkcs11js.CKR_PIN_INVALID, pkcs11js.CKR_PIN_LOCKED, pkcs11js.CKR_PIN_EXPIRED]);

export function isPkcs11Error(e: unknown, ...codes: number[]): boolean {
  return e instanceof pkcs11js.Pkcs11Error && (codes.length === 0 || codes.includes(e.code));
}

/** Names a CKR_ code for logs: "CKR_SESSION_HANDLE_INVALID". */
export function ckrName(code: number): string {
  const entry = Object.entries(pkcs11js).find(([k, v]) => k.startsWith("CKR_") && v === code);
  return entry ? entry[0] : `0x${code.toString(16)}`;
}

export function hsmError(e: unknown, what: string): HallmarkError {
  if (e instanceof HallmarkError) return e;
  if (e instanceof pkcs11js.Pkcs11Error) {
    if (PIN_ERRORS.has(e.code)) return new HallmarkError("hsm_login_failed", "the HSM refused the PIN", { internal: ckrName(e.code) });
    return new HallmarkError("hsm_error", `the HSM failed to ${what}`, { cause: e, internal: `${e.method}: ${ckrName(e.code)}` });
  }
  return new HallmarkError("hsm_error", `the HSM failed to ${what}`, { cause: e });
}

export interface OpenedModule {
  pkcs11: Pkcs11;
  slot: Handle;
}

/**
 * A module is initialised once per process (C_Initialize is process-wide), so every keystore
 * and the SoftHSM bootstrap share one loaded copy per path, finalised when the last lets go.
 */
const loaded = new Map<string, { pkcs11: Pkcs11; users: number }>();

/**
 * Loads `modulePath` (or shares the copy already loaded) and initialises it with
 * CKF_OS_LOCKING_OK: without it SoftHSM2 is not thread-safe and concurrent asynchronous signing
 * on several sessions crashes the process. Pair every call with releaseModule.
 */
export function acquireModule(modulePath: string): Pkcs11 {
  const shared = loaded.get(modulePath);
  if (shared) {
    shared.users++;
    return shared.pkcs11;
  }
  if (!existsSync(modulePath)) {
    throw new HallmarkError("hsm_module_not_found", `no PKCS#11 module at ${modulePath}`);
  }
  const pkcs11 = new pkcs11js.PKCS11();
  try {
    pkcs11.load(modulePath);
  } catch (e) {
    throw new HallmarkError("hsm_module_not_found", `cannot load the PKCS#11 module at ${modulePath}`, { cause: e });
  }
  try {
    initialise(pkcs11, "initialise");
  } catch (e) {
    pkcs11.close();
    throw e;
  }
  loaded.set(modulePath, { pkcs11, users: 1 });
  return pkcs11;
}

export function releaseModule(pkcs11: Pkcs11): void {
  for (const [path, entry] of loaded) {
    if (entry.pkcs11 !== pkcs11) continue;
    if (--entry.users > 0) return;
    loaded.delete(path);
    try {
      pkcs11.C_Finalize();
    } catch {
      // already finalised
    }
    try {
      pkcs11.close();
    } catch {
      // already closed
    }
    return;
  }
}

/** Finds the initialised token labelled `tokenLabel`; slot ids are reassigned, labels are not. */
export function findTokenSlot(pkcs11: Pkcs11, tokenLabel: string): Handle | undefined {
  try {
    return pkcs11.C_GetSlotList(true).find((slot) => {
      const info = pkcs11.C_GetTokenInfo(slot);
      return (info.flags & pkcs11js.CKF_TOKEN_INITIALIZED) !== 0 && info.label.trim() === tokenLabel;
    });
  } catch (e) {
    throw hsmError(e, "list tokens");
  }
}

/**
 * Makes the module read the tokens again from scratch: C_Finalize, then C_Initialize. Every
 * session of the module in this process closes and the user is logged out; a keystore sharing
 * the module finds its sessions lost and reopens them.
 *
 * Why: SoftHSM2's file-backed token keeps one view of its directory per process. When that
 * process reads the token's file while another process rewrites it (every C_Login does), the
 * view is marked invalid and never read again: the token's info fails ("failed to list tokens")
 * and objects the other process creates never appear, until the module is initialised again.
 * Replicas or workers starting together on one token hit it (test/hsm/stale-token-view.test.ts
 * reproduces it).
 */
export function reloadModule(pkcs11: Pkcs11): void {
  try {
    pkcs11.C_Finalize();
  } catch {
    // not initialised: C_Initialize below is what counts
  }
  loggedInPins.delete(pkcs11);
  initialise(pkcs11, "initialise again");
}

/** C_Initialize for this process; a module another part of the process initialised already is fine. */
function initialise(pkcs11: Pkcs11, what: string): void {
  try {
    pkcs11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (e) {
    if (!isPkcs11Error(e, pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED)) throw hsmError(e, what);
  }
}

/**
 * Waits before each reload when a token that must exist is missing or unreadable (see
 * reloadModule): the other process may still be writing the token's files, so reloading at once
 * can read them torn again (seen: three immediate lookups all missed while replicas started).
 * 1.55 s in all before a token is called missing.
 */
export const TOKEN_RELOAD_DELAYS_MS: readonly number[] = [50, 100, 200, 400, 800];

/**
 * findTokenSlot, except that a token missing or unreadable makes the module reload and look
 * again, once after each of `delaysMs` (see reloadModule), so a stale view is not taken for a
 * missing token. Undefined when the token is still missing; the listing's error when it still fails.
 */
export async function findTokenSlotReloading(pkcs11: Pkcs11, tokenLabel: string, delaysMs: readonly number[]): Promise<Handle | undefined> {
  for (let reloads = 0; ; reloads++) {
    let failure: unknown;
    try {
      const slot = findTokenSlot(pkcs11, tokenLabel);
      if (slot) return slot;
    } catch (e) {
      failure = e;
    }
    if (reloads >= delaysMs.length) {
      if (failure) throw failure;
      return undefined;
    }
    if (delaysMs[reloads]! > 0) await new Promise((resolve) => setTimeout(resolve, delaysMs[reloads]));
    reloadModule(pkcs11);
  }
}

/** reloadModule, then the token that must exist looked up again by label (its slot may change). */
export async function reloadToken(pkcs11: Pkcs11, tokenLabel: string): Promise<Handle> {
  reloadModule(pkcs11);
  const slot = await findTokenSlotReloading(pkcs11, tokenLabel, TOKEN_RELOAD_DELAYS_MS);
  if (!slot) throw tokenNotFound(tokenLabel);
  return slot;
}

/** acquireModule, then the token by label (a token that must exist: see TOKEN_RELOAD_DELAYS_MS). */
export async function openModule(modulePath: string, tokenLabel: string): Promise<OpenedModule> {
  const pkcs11 = acquireModule(modulePath);
  let slot: Handle | undefined;
  try {
    slot = await findTokenSlotReloading(pkcs11, tokenLabel, TOKEN_RELOAD_DELAYS_MS);
  } catch (e) {
    releaseModule(pkcs11);
    throw e;
  }
  if (!slot) {
    releaseModule(pkcs11);
    throw tokenNotFound(tokenLabel);
  }
  return { pkcs11, slot };
}

function tokenNotFound(tokenLabel: string): HallmarkError {
  return new HallmarkError("hsm_token_not_found", `no PKCS#11 token labelled '${tokenLabel}'`);
}

/**
 * Login is per application and token, so a second keystore in this process finds the user
 * logged in already and the token never checks its PIN. We check it ourselves against a keyed
 * digest of the PIN that did log in (never the PIN itself).
 */
const pinKey = randomBytes(32);
const loggedInPins = new WeakMap<Pkcs11, Map<string, Buffer>>();
const pinDigest = (pin: string) => createHmac("sha256", pinKey).update(pin, "utf8").digest();

/** Opens a read-write session and logs the user in (once per application: other sessions share it). */
export function openUserSession(pkcs11: Pkcs11, slot: Handle, pin: string): Handle {
  let session: Handle;
  try {
    session = pkcs11.C_OpenSession(slot, pkcs11js.CKF_RW_SESSION | pkcs11js.CKF_SERIAL_SESSION);
  } catch (e) {
    throw hsmError(e, "open a session");
  }
  const pins = loggedInPins.get(pkcs11) ?? new Map<string, Buffer>();
  loggedInPins.set(pkcs11, pins);
  const slotKey = slot.toString("hex");
  let failure: HallmarkError | undefined;
  try {
    pkcs11.C_Login(session, pkcs11js.CKU_USER, pin);
    pins.set(slotKey, pinDigest(pin));
  } catch (e) {
    if (!isPkcs11Error(e, pkcs11js.CKR_USER_ALREADY_LOGGED_IN)) {
      failure = hsmError(e, "log in");
    } else {
      const known = pins.get(slotKey);
      if (known && !timingSafeEqual(known, pinDigest(pin))) {
        failure = new HallmarkError("hsm_login_failed", "the HSM refused the PIN", { internal: "differs from the PIN this process logged in with" });
      }
    }
  }
  if (failure) {
    try {
      pkcs11.C_CloseSession(session);
    } catch {
      // the login error is the one to report
    }
    throw failure;
  }
  return session;
}
