/**
 * Measurement policy values: a policy entry is either one exact value or a set of allowed
 * values. Hex is compared case-insensitively (policies are written by hand; evidence is not).
 */
export type AllowedValues = string | readonly string[];

export function normalizeHex(value: string): string {
  return value.trim().toLowerCase().replace(/^0x/, "");
}

export function hexAllowed(actual: string, allowed: AllowedValues): boolean {
  const want = typeof allowed === "string" ? [allowed] : allowed;
  const got = normalizeHex(actual);
  return want.some((w) => normalizeHex(w) === got);
}
