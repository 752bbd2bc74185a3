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
 * Loads `modulePath` and initialises it with CKF_OS_LOCKING_OK: without it SoftHSM2 is not
 * thread-safe and concurrent asynchronous signing on several sessions crashes the process.
 * The token is selected by label, since slot ids are reassigned.
 */
export function openModule(modulePath: string, tokenLabel: string): OpenedModule {
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
    pkcs11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (e) {
    if (!isPkcs11Error(e, pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED)) throw hsmError(e, "initialise");
  }
  try {
    for (const slot of pkcs11.C_GetSlotList(true)) {
      const label = pkcs11.C_GetTokenInfo(slot).label.trim();
      if (label === tokenLabel) return { pkcs11, slot };
    }
  } catch (e) {
    closeModule(pkcs11);
    throw hsmError(e, "list tokens");
  }
  closeModule(pkcs11);
  throw new HallmarkError("hsm_token_not_found", `no PKCS#11 token labelled '${tokenLabel}'`);
}

export function closeModule(pkcs11: Pkcs11): void {
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
}

/** Opens a read-write session and logs the user in (once per application: other sessions share it). */
export function openUserSession(pkcs11: Pkcs11, slot: Handle, pin: string): Handle {
  let session: Handle;
  try {
    session = pkcs11.C_OpenSession(slot, pkcs11js.CKF_RW_SESSION | pkcs11js.CKF_SERIAL_SESSION);
  } catch (e) {
    throw hsmError(e, "open a session");
  }
  try {
    pkcs11.C_Login(session, pkcs11js.CKU_USER, pin);
  } catch (e) {
    if (!isPkcs11Error(e, pkcs11js.CKR_USER_ALREADY_LOGGED_IN)) {
      try {
        pkcs11.C_CloseSession(session);
      } catch {
        // the login error is the one to report
      }
      throw hsmError(e, "log in");
    }
  }
  return session;
}
