import { AES_KEY_BITS, ECC_CURVES, HASH_ALGS, RSA_KEY_BITS, TPMA_OBJECT_RESERVED, TPM_ALG, TPM_GENERATED_VALUE, TPM_ST } from "./constants.js";
import { tpmError } from "./errors.js";
import { TpmReader, TpmWriter } from "./wire.js";

/** TPMT_SYM_DEF_OBJECT (Part 2 §11.1.7): algorithm NULL, or algorithm, keyBits, mode. */
export interface SymDef {
  algorithm: number;
  keyBits?: number;
  mode?: number;
}

export type TpmtPublic =
  | {
      type: typeof TPM_ALG.RSA;
      nameAlg: number;
      objectAttributes: number;
      authPolicy: Buffer;
      symmetric: SymDef;
      scheme: { scheme: number; hashAlg?: number };
      keyBits: number;
      exponent: number;
      modulus: Buffer;
      raw: Buffer;
    }
  | {
      type: typeof TPM_ALG.ECC;
      nameAlg: number;
      objectAttributes: number;
      authPolicy: Buffer;
      symmetric: SymDef;
      scheme: { scheme: number; hashAlg?: number };
      curveId: number;
      kdf: { scheme: number; hashAlg?: number };
      x: Buffer;
      y: Buffer;
      raw: Buffer;
    };

/** TPMT_SYM_DEF_OBJECT: NULL, or AES-128/192/256 in CFB mode (Part 2 §12.2.3.7: the only mode a storage key may have). */
function readSym(r: TpmReader): SymDef {
  const algorithm = r.u16();
  if (algorithm === TPM_ALG.NULL) return { algorithm };
  if (algorithm !== TPM_ALG.AES) throw tpmError("tpm_public_unknown_symmetric", `symmetric algorithm 0x${algorithm.toString(16)} is not AES or NULL`);
  const keyBits = r.u16();
  const mode = r.u16();
  if (!AES_KEY_BITS.includes(keyBits) || mode !== TPM_ALG.CFB) throw tpmError("tpm_public_unknown_symmetric", `AES-${keyBits} in mode 0x${mode.toString(16)} is not AES-128/192/256-CFB`);
  return { algorithm, keyBits, mode };
}

/** A TPMI_ALG_HASH without NULL: the four SHA hashes Hallmark can compute. */
function readHash(r: TpmReader, what: string): number {
  const alg = r.u16();
  if (!HASH_ALGS[alg]) throw tpmError("tpm_public_unknown_hash", `${what} 0x${alg.toString(16)} is not SHA-1, SHA-256, SHA-384 or SHA-512`);
  return alg;
}

/** The signing schemes a key of each type may name besides NULL (ECDAA, SM2, RSAES, OAEP, ECDH: never used for evidence). */
const SIGNING_SCHEMES: Record<number, readonly number[]> = { [TPM_ALG.RSA]: [TPM_ALG.RSASSA, TPM_ALG.RSAPSS], [TPM_ALG.ECC]: [TPM_ALG.ECDSA] };

/** TPMT_RSA_SCHEME / TPMT_ECC_SCHEME: NULL, or a signing scheme of the key's type with its hash. */
function readScheme(r: TpmReader, type: number): { scheme: number; hashAlg?: number } {
  const scheme = r.u16();
  if (scheme === TPM_ALG.NULL) return { scheme };
  if (!SIGNING_SCHEMES[type]?.includes(scheme)) throw tpmError("tpm_public_unknown_scheme", `scheme 0x${scheme.toString(16)} is not a supported signing scheme for this key type`);
  return { scheme, hashAlg: readHash(r, "the scheme's hash") };
}

/**
 * TPMT_PUBLIC (Part 2 §12.2.4) for RSA and ECC keys; `raw` keeps the exact bytes (Names hash them).
 * Strict: every identifier must be one Hallmark supports for its field, reserved attribute bits
 * must be clear, and sizes must fit the algorithms, so a public area no TPM could have produced
 * is refused here with a code naming the field.
 */
export function readTpmtPublic(r: TpmReader): TpmtPublic {
  const start = r.offset;
  const type = r.u16();
  if (type !== TPM_ALG.RSA && type !== TPM_ALG.ECC) throw tpmError("tpm_unknown_tag", `TPMT_PUBLIC type 0x${type.toString(16)} is not RSA or ECC`);
  const nameAlg = readHash(r, "nameAlg");
  const objectAttributes = r.u32();
  const reserved = objectAttributes & TPMA_OBJECT_RESERVED;
  if (reserved) throw tpmError("tpm_public_reserved_bits", `objectAttributes sets reserved bits 0x${(reserved >>> 0).toString(16)}`);
  const authPolicy = r.tpm2b();
  // Part 3 TPM2_Create: an authPolicy is empty or one digest of nameAlg (TPM_RC_SIZE otherwise).
  if (authPolicy.length !== 0 && authPolicy.length !== HASH_ALGS[nameAlg]!.size) throw tpmError("tpm_size_mismatch", "authPolicy is neither empty nor one nameAlg digest");
  const symmetric = readSym(r);
  const scheme = readScheme(r, type);
  if (type === TPM_ALG.RSA) {
    const keyBits = r.u16();
    if (!RSA_KEY_BITS.includes(keyBits)) throw tpmError("tpm_public_bad_rsa_parameters", `RSA keyBits ${keyBits} is not 2048, 3072 or 4096`);
    const exponent = r.u32();
    // 0 means 65537 (Part 2 §12.2.3.5); anything else must be an odd exponent of at least 3.
    if (exponent !== 0 && (exponent < 3 || exponent % 2 === 0)) throw tpmError("tpm_public_bad_rsa_parameters", `RSA exponent ${exponent} is not valid`);
    const modulus = r.tpm2b();
    if (modulus.length * 8 !== keyBits) throw tpmError("tpm_size_mismatch", "the RSA modulus does not have keyBits bits");
    return { type, nameAlg, objectAttributes, authPolicy, symmetric, scheme, keyBits, exponent, modulus, raw: r.slice(start, r.offset) };
  }
  const curveId = r.u16();
  const curve = ECC_CURVES[curveId];
  if (!curve) throw tpmError("tpm_public_unknown_curve", `ECC curve 0x${curveId.toString(16)} is not NIST P-256, P-384 or P-521`);
  const kdf = r.u16();
  // Every EK and AK template leaves the KDF to the scheme; none of our uses reads one.
  if (kdf !== TPM_ALG.NULL) throw tpmError("tpm_public_unknown_scheme", `ECC kdf 0x${kdf.toString(16)} is not NULL`);
  const x = r.tpm2b();
  const y = r.tpm2b();
  if (x.length > curve.size || y.length > curve.size) throw tpmError("tpm_size_mismatch", `an ECC coordinate is longer than ${curve.crv} allows`);
  return { type, nameAlg, objectAttributes, authPolicy, symmetric, scheme, curveId, kdf: { scheme: kdf }, x, y, raw: r.slice(start, r.offset) };
}

export function decodeTpmtPublic(bytes: Buffer): TpmtPublic {
  const r = new TpmReader(bytes);
  const p = readTpmtPublic(r);
  r.end();
  return p;
}

/** TPM2B_PUBLIC: the size must equal the TPMT_PUBLIC's length exactly. */
export function decodeTpm2bPublic(bytes: Buffer): TpmtPublic {
  const r = new TpmReader(bytes);
  const inner = r.tpm2b();
  r.end();
  return decodeTpmtPublic(inner);
}

export function encodeTpmtPublic(p: TpmtPublic): Buffer {
  const w = new TpmWriter().u16(p.type).u16(p.nameAlg).u32(p.objectAttributes).tpm2b(p.authPolicy);
  const sym = (s: SymDef) => (s.algorithm === TPM_ALG.NULL ? w.u16(s.algorithm) : w.u16(s.algorithm).u16(s.keyBits ?? 0).u16(s.mode ?? 0));
  const scheme = (s: { scheme: number; hashAlg?: number }) => (s.scheme === TPM_ALG.NULL ? w.u16(s.scheme) : w.u16(s.scheme).u16(s.hashAlg ?? 0));
  sym(p.symmetric);
  scheme(p.scheme);
  if (p.type === TPM_ALG.RSA) w.u16(p.keyBits).u32(p.exponent).tpm2b(p.modulus);
  else {
    w.u16(p.curveId);
    scheme(p.kdf);
    w.tpm2b(p.x).tpm2b(p.y);
  }
  return w.finish();
}

export function encodeTpm2bPublic(p: TpmtPublic): Buffer {
  return new TpmWriter().tpm2b(encodeTpmtPublic(p)).finish();
}

export interface PcrSelection {
  hashAlg: number;
  pcrs: number[];
}

/** TPML_PCR_SELECTION (Part 2 §10.9.7). */
export function readPcrSelections(r: TpmReader): PcrSelection[] {
  const count = r.u32();
  if (count > 16) throw tpmError("tpm_size_mismatch", "too many PCR banks in a selection");
  const out: PcrSelection[] = [];
  for (let i = 0; i < count; i++) {
    const hashAlg = r.u16();
    const size = r.u8();
    if (size > 8) throw tpmError("tpm_size_mismatch", "a PCR select bitmap is larger than 8 bytes");
    const map = r.bytes(size);
    const pcrs: number[] = [];
    map.forEach((byte, j) => {
      for (let bit = 0; bit < 8; bit++) if (byte & (1 << bit)) pcrs.push(j * 8 + bit);
    });
    out.push({ hashAlg, pcrs });
  }
  return out;
}

export function encodePcrSelections(sel: PcrSelection[]): Buffer {
  const w = new TpmWriter().u32(sel.length);
  for (const s of sel) {
    const map = Buffer.alloc(Math.max(3, Math.ceil((Math.max(-1, ...s.pcrs) + 1) / 8)));
    for (const p of s.pcrs) map[p >> 3] = (map[p >> 3] ?? 0) | (1 << (p & 7));
    w.u16(s.hashAlg).u8(map.length).bytes(map);
  }
  return w.finish();
}

export interface TpmsAttest {
  magic: number;
  type: number;
  qualifiedSigner: Buffer;
  extraData: Buffer;
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
  firmwareVersion: bigint;
  quote?: { pcrSelect: PcrSelection[]; pcrDigest: Buffer } | undefined;
  certify?: { name: Buffer; qualifiedName: Buffer } | undefined;
  raw: Buffer;
}

/**
 * TPMS_ATTEST (Part 2 §10.12.12) for quotes and certifications. Also accepts the TPM2B_ATTEST
 * wrapping (a u16 size first); tpm2_quote -m writes the bare TPMS_ATTEST.
 */
export function decodeTpmsAttest(bytes: Buffer): TpmsAttest {
  let body = bytes;
  if (bytes.length >= 6 && bytes.readUInt32BE(0) !== TPM_GENERATED_VALUE && bytes.readUInt32BE(2) === TPM_GENERATED_VALUE) {
    const outer = new TpmReader(bytes);
    body = outer.tpm2b();
    outer.end();
  }
  const r = new TpmReader(body);
  const magic = r.u32();
  if (magic !== TPM_GENERATED_VALUE) throw tpmError("tpm_quote_bad_magic", "the attestation does not start with TPM_GENERATED_VALUE");
  const type = r.u16();
  const qualifiedSigner = r.tpm2b();
  const extraData = r.tpm2b();
  const clock = r.u64();
  const resetCount = r.u32();
  const restartCount = r.u32();
  const safeByte = r.u8();
  if (safeByte > 1) throw tpmError("tpm_unknown_tag", "clockInfo.safe is not a boolean");
  const firmwareVersion = r.u64();
  let quote: TpmsAttest["quote"];
  let certify: TpmsAttest["certify"];
  if (type === TPM_ST.ATTEST_QUOTE) quote = { pcrSelect: readPcrSelections(r), pcrDigest: r.tpm2b() };
  else if (type === TPM_ST.ATTEST_CERTIFY) certify = { name: r.tpm2b(), qualifiedName: r.tpm2b() };
  else throw tpmError("tpm_unknown_tag", `attestation type 0x${type.toString(16)} is not a quote or a certification`);
  r.end();
  return { magic, type, qualifiedSigner, extraData, clock, resetCount, restartCount, safe: safeByte === 1, firmwareVersion, quote, certify, raw: body };
}

export interface TpmtSignature {
  sigAlg: number;
  hashAlg: number;
  rsa?: Buffer | undefined;
  ecc?: { r: Buffer; s: Buffer } | undefined;
}

/** TPMT_SIGNATURE (Part 2 §11.3.4) for RSASSA, RSAPSS and ECDSA. */
export function decodeTpmtSignature(bytes: Buffer): TpmtSignature {
  const r = new TpmReader(bytes);
  const sigAlg = r.u16();
  let sig: TpmtSignature;
  if (sigAlg === TPM_ALG.RSASSA || sigAlg === TPM_ALG.RSAPSS) sig = { sigAlg, hashAlg: r.u16(), rsa: r.tpm2b() };
  else if (sigAlg === TPM_ALG.ECDSA) sig = { sigAlg, hashAlg: r.u16(), ecc: { r: r.tpm2b(), s: r.tpm2b() } };
  else throw tpmError("tpm_unsupported_algorithm", `signature algorithm 0x${sigAlg.toString(16)} is not supported`);
  r.end();
  if (!HASH_ALGS[sig.hashAlg]) throw tpmError("tpm_unsupported_algorithm", "the signature's hash algorithm is not supported");
  return sig;
}

export function encodeTpmtSignature(s: TpmtSignature): Buffer {
  const w = new TpmWriter().u16(s.sigAlg).u16(s.hashAlg);
  if (s.ecc) w.tpm2b(s.ecc.r).tpm2b(s.ecc.s);
  else w.tpm2b(s.rsa ?? Buffer.alloc(0));
  return w.finish();
}
