import { expect, it } from "vitest";
import { HallmarkError } from "../../src/errors.js";
import { loginRetryingBusyToken } from "../../src/hsm/pkcs11-keystore.js";

/** The first login tries again while the token is busy (another process writing it), never after a refused PIN. */
it("tries a failed login again, up to its bound, but never a refused PIN", async () => {
  let calls = 0;
  const busyTwice = () => {
    calls++;
    if (calls <= 2) throw new HallmarkError("hsm_error", "the HSM failed to log in");
    return Buffer.from([1]);
  };
  let reloads = 0;
  const countReload = () => {
    reloads++;
  };
  expect(await loginRetryingBusyToken(busyTwice, 5, countReload)).toEqual(Buffer.from([1]));
  expect(calls).toBe(3);
  // Before each retry, not before the first attempt nor after the success.
  expect(reloads).toBe(2);

  let pinCalls = 0;
  const refused = () => {
    pinCalls++;
    throw new HallmarkError("hsm_login_failed", "the HSM refused the PIN");
  };
  await expect(loginRetryingBusyToken(refused)).rejects.toMatchObject({ code: "hsm_login_failed" });
  expect(pinCalls).toBe(1);

  let alwaysCalls = 0;
  const alwaysBusy = () => {
    alwaysCalls++;
    throw new HallmarkError("hsm_error", "the HSM failed to log in");
  };
  await expect(loginRetryingBusyToken(alwaysBusy, 3)).rejects.toMatchObject({ code: "hsm_error" });
  expect(alwaysCalls).toBe(3);
});
