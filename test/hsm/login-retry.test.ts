import { expect, it } from "vitest";
import { HallmarkError } from "../../src/errors.js";
import { retryingBusyToken } from "../../src/hsm/pkcs11-keystore.js";

/** A touch of the token that fails with `code` its first `failures` times, counting its calls. */
function failing(code: string, failures = Number.POSITIVE_INFINITY): { touch: () => Buffer; calls: () => number } {
  let calls = 0;
  return {
    touch: () => {
      calls++;
      if (calls <= failures) throw new HallmarkError(code, `the HSM failed (${code})`);
      return Buffer.from([1]);
    },
    calls: () => calls,
  };
}

/** The first touches of a token (its slot, the first login) try again while it is busy (another process writing it), never after a refused PIN or a missing token. */
it("tries a failed touch again, up to its bound, but never a refused PIN", async () => {
  const busyTwice = failing("hsm_error", 2);
  expect(await retryingBusyToken(busyTwice.touch)).toEqual(Buffer.from([1]));
  expect(busyTwice.calls()).toBe(3);

  const refused = failing("hsm_login_failed");
  await expect(retryingBusyToken(refused.touch)).rejects.toMatchObject({ code: "hsm_login_failed" });
  expect(refused.calls()).toBe(1);

  const alwaysBusy = failing("hsm_error");
  await expect(retryingBusyToken(alwaysBusy.touch, 3)).rejects.toMatchObject({ code: "hsm_error" });
  expect(alwaysBusy.calls()).toBe(3);
});

it("never tries again when the token is not there", async () => {
  const missing = failing("hsm_token_not_found");
  await expect(retryingBusyToken(missing.touch)).rejects.toMatchObject({ code: "hsm_token_not_found" });
  expect(missing.calls()).toBe(1);
});
