import { HallmarkError } from "../../src/errors.js";

/** The code a promise is refused with, or "accepted": one line per bad input in refusal tables. */
export async function refusalCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code: string }).code;
  }
  return "accepted";
}

/** The HallmarkError code a call throws, or undefined when it returns; anything else is a bug and rethrown. */
export function thrownCode(f: () => unknown): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    if (e instanceof HallmarkError) return e.code;
    throw e;
  }
}
