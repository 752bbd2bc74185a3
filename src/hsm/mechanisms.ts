import { HallmarkError } from "../errors.js";
import { CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA, isEcKeyType, keyGenMechanism, rsaModulusBits } from "./key-templates.js";
import { type Handle, type Pkcs11, hsmError, pkcs11js } from "./pkcs11-module.js";
import type { KeyType, PureSignatureScheme, SignatureScheme } from "./signer.js";

/**
 * Which PKCS#11 mechanisms Hallmark uses, and the start-up check that the token has them: a
 * vendor HSM without, say, CKM_ECDSA would otherwise fail at the first rotation or issuance,
 * long after the operator stopped watching the start.
 */

/** The mechanism per scheme. ECDSA: hashed outside (SoftHSM2 lacks CKM_ECDSA_SHA256), CKM_ECDSA over the digest. */
const SIGN_MECHANISMS: Record<SignatureScheme | PureSignatureScheme, () => pkcs11js.Mechanism> = {
  // Pure EdDSA: CKM_EDDSA without parameters is Ed25519 over the whole message (PKCS#11 3.0 §2.3.14).
  ed25519: () => ({ mechanism: CKM_EDDSA }),
  "ecdsa-sha256": () => ({ mechanism: pkcs11js.CKM_ECDSA }),
  "ecdsa-sha384": () => ({ mechanism: pkcs11js.CKM_ECDSA }),
  "rsa-pkcs1-sha256": () => ({ mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }),
  "rsa-pkcs1-sha384": () => ({ mechanism: pkcs11js.CKM_SHA384_RSA_PKCS }),
  "rsa-pss-sha256": () => ({
    mechanism: pkcs11js.CKM_SHA256_RSA_PKCS_PSS,
    parameter: { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg: pkcs11js.CKM_SHA256, mgf: pkcs11js.CKG_MGF1_SHA256, saltLen: 32 },
  }),
  "rsa-pss-sha384": () => ({
    mechanism: pkcs11js.CKM_SHA384_RSA_PKCS_PSS,
    parameter: { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg: pkcs11js.CKM_SHA384, mgf: pkcs11js.CKG_MGF1_SHA384, saltLen: 48 },
  }),
};

export function signMechanism(scheme: SignatureScheme | PureSignatureScheme): pkcs11js.Mechanism {
  return SIGN_MECHANISMS[scheme]();
}

/** One key the configuration will generate and sign with, e.g. the X.509 CA key. */
export interface KeyUse {
  /** Where it comes from, for the error: "ca.keyType". */
  purpose: string;
  keyType: KeyType;
  scheme: SignatureScheme | PureSignatureScheme;
}

/** One mechanism the token must offer, with the capability flag it must have. */
export interface MechanismNeed {
  mechanism: number;
  /** CKF_GENERATE_KEY_PAIR or CKF_SIGN. */
  flag: number;
  /** RSA: the modulus size the key type needs, checked against the mechanism's range. */
  modulusBits?: number | undefined;
  purpose: string;
}

export interface MechanismInfo {
  flags: number;
  minKeySize: number;
  maxKeySize: number;
}

/** Names a CKM_ code: "CKM_ECDSA", or its hex value when pkcs11js has no name for it. */
export function mechanismName(mechanism: number): string {
  // PKCS#11 3.0 codes pkcs11js has no constants for.
  if (mechanism === CKM_EC_EDWARDS_KEY_PAIR_GEN) return "CKM_EC_EDWARDS_KEY_PAIR_GEN";
  if (mechanism === CKM_EDDSA) return "CKM_EDDSA";
  const entry = Object.entries(pkcs11js).find(([k, v]) => k.startsWith("CKM_") && v === mechanism);
  return entry ? entry[0] : `mechanism 0x${mechanism.toString(16)}`;
}

/** Key-pair generation and signing for each use (hashing happens outside the token: no CKM_SHA256 needed). */
export function mechanismNeeds(uses: readonly KeyUse[]): MechanismNeed[] {
  return uses.flatMap((u) => {
    const modulusBits = isEcKeyType(u.keyType) ? undefined : rsaModulusBits(u.keyType);
    const purpose = `${u.purpose} ${u.keyType}`;
    return [
      { mechanism: keyGenMechanism(u.keyType), flag: pkcs11js.CKF_GENERATE_KEY_PAIR, modulusBits, purpose },
      { mechanism: signMechanism(u.scheme).mechanism, flag: pkcs11js.CKF_SIGN, modulusBits, purpose: `${purpose} (${u.scheme})` },
    ];
  });
}

/**
 * The needs `available` does not meet, one readable phrase each. Pure, so a requirement no real
 * token misses can still be tested. Key sizes are compared for RSA only: PKCS#11 2.x modules
 * disagree on whether an EC mechanism's range is in bits or bytes, and a false refusal of a
 * working HSM is worse than an error at the first key generation.
 */
export function findMissingMechanisms(available: ReadonlyMap<number, MechanismInfo>, needs: readonly MechanismNeed[]): string[] {
  const missing: string[] = [];
  for (const n of needs) {
    const info = available.get(n.mechanism);
    const name = mechanismName(n.mechanism);
    const what = n.flag === pkcs11js.CKF_SIGN ? "signing" : "key-pair generation";
    let problem: string | undefined;
    if (!info) problem = `${name} (${what})`;
    else if ((info.flags & n.flag) === 0) problem = `${name} is not offered for ${what}`;
    else if (n.modulusBits !== undefined && info.maxKeySize > 0 && (n.modulusBits < info.minKeySize || n.modulusBits > info.maxKeySize)) {
      problem = `${name} for ${n.modulusBits}-bit keys (the token allows ${info.minKeySize}-${info.maxKeySize})`;
    }
    if (problem && !missing.some((m) => m.startsWith(problem!))) missing.push(`${problem} for ${n.purpose}`);
  }
  return missing;
}

/** The token's mechanisms (C_GetMechanismList, then C_GetMechanismInfo for each). */
export function readMechanisms(pkcs11: Pkcs11, slot: Handle): Map<number, MechanismInfo> {
  try {
    const out = new Map<number, MechanismInfo>();
    for (const m of pkcs11.C_GetMechanismList(slot)) {
      const info = pkcs11.C_GetMechanismInfo(slot, m);
      out.set(m, { flags: info.flags, minKeySize: info.minKeySize, maxKeySize: info.maxKeySize });
    }
    return out;
  } catch (e) {
    throw hsmError(e, "list its mechanisms");
  }
}

/** Refuses a token that lacks a mechanism the configured keys need (see mechanismNeeds), naming each missing one. */
export function assertMechanisms(pkcs11: Pkcs11, slot: Handle, tokenLabel: string, needs: readonly MechanismNeed[]): void {
  if (needs.length === 0) return;
  const missing = findMissingMechanisms(readMechanisms(pkcs11, slot), needs);
  if (missing.length === 0) return;
  throw new HallmarkError("hsm_mechanism_missing", `the PKCS#11 token '${tokenLabel}' lacks ${missing.join("; ")}`);
}
