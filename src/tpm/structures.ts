import { HASH_ALGS, TPM_ALG, TPM_GENERATED_VALUE, TPM_ST } from "./constants.js";
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

function readSym(r: TpmReader): SymDef {
  const algorithm = r.u16();
  return algorithm === TPM_ALG.NULL ? { algorithm } : { algorithm, keyBits: r.u16(), mode: r.u16() };
}

/** A scheme selector: NULL, or one with a hash (ECDAA, with its count, is refused). */
function readScheme(r: TpmReader): { scheme: number; hashAlg?: number } {
  const scheme = r.u16();
  if (scheme === TPM_ALG.NULL) return { scheme };
  if (scheme === TPM_ALG.ECDAA) throw tpmError("tpm_unsupported_algorithm", "ECDAA keys are not supported");
  return { scheme, hashAlg: r.u16() };
}

/** TPMT_PUBLIC (Part 2 §12.2.4) for RSA and ECC keys; `raw` keeps the exact bytes (Names hash them). */
export function readTpmtPublic(r: TpmReader): TpmtPublic {
  const start = r.offset;
  const type = r.u16();
  const nameAlg = r.u16();
  if (!HASH_ALGS[nameAlg]) throw tpmError("tpm_unsupported_algorithm", `nameAlg 0x${nameAlg.toString(16)} is not supported`);
  const objectAttributes = r.u32();
  const authPolicy = r.tpm2b();
  if (type === TPM_ALG.RSA) {
    const symmetric = readSym(r);
    const scheme = readScheme(r);
    const keyBits = r.u16();
    const exponent = r.u32();
    const modulus = r.tpm2b();
    if (modulus.length * 8 !== keyBits) throw tpmError("tpm_size_mismatch", "the RSA modulus does not have keyBits bits");
    return { type, nameAlg, objectAttributes, authPolicy, symmetric, scheme, keyBits, exponent, modulus, raw: r.slice(start, r.offset) };
  }
  if (type === TPM_ALG.ECC) {
    const symmetric = readSym(r);
    const scheme = readScheme(r);
    const curveId = r.u16();
    const kdf = readScheme(r);
    const x = r.tpm2b();
    const y = r.tpm2b();
    return { type, nameAlg, objectAttributes, authPolicy, symmetric, scheme, curveId, kdf, x, y, raw: r.slice(start, r.offset) };
  }
  throw tpmError("tpm_unknown_tag", `TPMT_PUBLIC type 0x${type.toString(16)} is not RSA or ECC`);
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
