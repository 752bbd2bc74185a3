/** TPM_RC names (TPM 2.0 Part 2 §6.6), for errors a person can read: "TPM_RC_POLICY_FAIL (session 2)". */
const FORMAT_ONE: Record<number, string> = {
  0x081: "ASYMMETRIC", 0x082: "ATTRIBUTES", 0x083: "HASH", 0x084: "VALUE", 0x085: "HIERARCHY", 0x087: "KEY_SIZE",
  0x088: "MGF", 0x089: "MODE", 0x08a: "TYPE", 0x08b: "HANDLE", 0x08c: "KDF", 0x08d: "RANGE", 0x08e: "AUTH_FAIL",
  0x08f: "NONCE", 0x090: "PP", 0x092: "SCHEME", 0x095: "SIZE", 0x096: "SYMMETRIC", 0x097: "TAG", 0x098: "SELECTOR",
  0x09a: "INSUFFICIENT", 0x09b: "SIGNATURE", 0x09c: "KEY", 0x09d: "POLICY_FAIL", 0x09f: "INTEGRITY", 0x0a0: "TICKET",
  0x0a1: "RESERVED_BITS", 0x0a2: "BAD_AUTH", 0x0a3: "EXPIRED", 0x0a4: "POLICY_CC", 0x0a5: "BINDING", 0x0a6: "CURVE",
  0x0a7: "ECC_POINT",
};
const FORMAT_ZERO: Record<number, string> = {
  0x100: "INITIALIZE", 0x101: "FAILURE", 0x103: "SEQUENCE", 0x120: "DISABLED", 0x121: "EXCLUSIVE", 0x124: "AUTH_TYPE",
  0x125: "AUTH_MISSING", 0x126: "POLICY", 0x127: "PCR", 0x128: "PCR_CHANGED", 0x12d: "UPGRADE", 0x12e: "TOO_MANY_CONTEXTS",
  0x12f: "AUTH_UNAVAILABLE", 0x130: "REBOOT", 0x131: "UNBALANCED", 0x142: "COMMAND_SIZE", 0x143: "COMMAND_CODE",
  0x144: "AUTHSIZE", 0x145: "AUTH_CONTEXT", 0x146: "NV_RANGE", 0x147: "NV_SIZE", 0x148: "NV_LOCKED", 0x149: "NV_AUTHORIZATION",
  0x14a: "NV_UNINITIALIZED", 0x14b: "NV_SPACE", 0x14c: "NV_DEFINED", 0x150: "BAD_CONTEXT", 0x151: "CPHASH", 0x152: "PARENT",
  0x153: "NEEDS_TEST", 0x154: "NO_RESULT", 0x155: "SENSITIVE",
  0x901: "CONTEXT_GAP", 0x902: "OBJECT_MEMORY", 0x903: "SESSION_MEMORY", 0x904: "MEMORY", 0x905: "SESSION_HANDLES",
  0x906: "OBJECT_HANDLES", 0x907: "LOCALITY", 0x908: "YIELDED", 0x909: "CANCELED", 0x90a: "TESTING", 0x920: "NV_RATE",
  0x921: "LOCKOUT", 0x922: "RETRY", 0x923: "NV_UNAVAILABLE",
};

export function responseCodeName(rc: number): string {
  if (rc & 0x080) {
    const name = FORMAT_ONE[0x080 | (rc & 0x3f)] ?? `0x${(0x080 | (rc & 0x3f)).toString(16)}`;
    const n = rc & 0x040 ? `parameter ${(rc >> 8) & 0xf}` : rc & 0x800 ? `session ${(rc >> 8) & 0x7}` : `handle ${(rc >> 8) & 0x7}`;
    return `TPM_RC_${name} (${n})`;
  }
  const name = FORMAT_ZERO[rc];
  return name ? `TPM_RC_${name}` : `TPM_RC 0x${rc.toString(16)}`;
}
