import { CborError, CborMap, CborTagged, type CborValue, decodeCbor } from "../../cbor/decode.js";
import { nitroError } from "./errors.js";

/**
 * The AWS Nitro Enclaves attestation document (aws/aws-nitro-enclaves-nsm-api,
 * docs/attestation_process.md): a COSE_Sign1 (tagged 18 or not) whose payload is a CBOR map.
 * Parsing keeps the exact protected-header and payload bytes: the signature is checked over
 * what was received, never over a re-encoding.
 */
export interface NitroDocument {
  protectedRaw: Uint8Array;
  payloadRaw: Uint8Array;
  signature: Uint8Array;
  alg: number;
  moduleId: string;
  digest: string;
  timestamp: Date;
  pcrs: Map<number, Buffer>;
  certificate: Uint8Array;
  cabundle: Uint8Array[];
  publicKey?: Uint8Array | undefined;
  userData?: Uint8Array | undefined;
  nonce?: Uint8Array | undefined;
}

export const MAX_DOCUMENT_BYTES = 32 * 1024;
const COSE_SIGN1_TAG = 18;
const MAX_OPTIONAL_FIELD = 1024;
const PCR_LENGTHS = new Set([32, 48, 64]);

const bad = (why: string) => nitroError("nitro_document_malformed", `Nitro document: ${why}`);

export function parseNitroDocument(bytes: Uint8Array): NitroDocument {
  if (bytes.length > MAX_DOCUMENT_BYTES) throw nitroError("nitro_document_too_large", `the document is larger than ${MAX_DOCUMENT_BYTES} bytes`);
  let outer = decodeStrict(bytes);
  if (outer instanceof CborTagged) {
    if (outer.tag !== COSE_SIGN1_TAG) throw bad(`unexpected CBOR tag ${String(outer.tag)}`);
    outer = outer.value;
  }
  if (!Array.isArray(outer) || outer.length !== 4) throw bad("not a COSE_Sign1 array of four items");
  const [protectedRaw, unprotectedHeader, payloadRaw, signature] = outer;
  if (!(protectedRaw instanceof Uint8Array) || !(payloadRaw instanceof Uint8Array) || !(signature instanceof Uint8Array)) {
    throw bad("protected header, payload and signature must be byte strings");
  }
  if (!(unprotectedHeader instanceof CborMap)) throw bad("the unprotected header must be a map");
  const header = decodeStrict(protectedRaw);
  if (!(header instanceof CborMap)) throw bad("the protected header must be a map");
  const alg = header.get(1);
  if (typeof alg !== "number") throw bad("the protected header has no integer alg (1)");

  const p = decodeStrict(payloadRaw);
  if (!(p instanceof CborMap)) throw bad("the payload must be a map");
  const text = (k: string) => {
    const v = p.get(k);
    if (typeof v !== "string") throw bad(`${k} must be a text string`);
    return v;
  };
  const bstr = (k: string) => {
    const v = p.get(k);
    if (!(v instanceof Uint8Array)) throw bad(`${k} must be a byte string`);
    return v;
  };
  const optional = (k: string) => {
    const v = p.get(k);
    if (v === undefined || v === null) return undefined;
    if (!(v instanceof Uint8Array)) throw bad(`${k} must be a byte string or null`);
    if (v.length > MAX_OPTIONAL_FIELD) throw bad(`${k} is longer than ${MAX_OPTIONAL_FIELD} bytes`);
    return v;
  };
  const ts = p.get("timestamp");
  if (typeof ts !== "number" || !Number.isSafeInteger(ts) || ts <= 0) throw bad("timestamp must be a positive integer (milliseconds)");
  const pcrMap = p.get("pcrs");
  if (!(pcrMap instanceof CborMap) || pcrMap.size === 0 || pcrMap.size > 32) throw bad("pcrs must be a map of 1 to 32 entries");
  const pcrs = new Map<number, Buffer>();
  for (const [k, v] of pcrMap) {
    if (typeof k !== "number" || !Number.isInteger(k) || k < 0 || k > 31) throw bad("PCR indexes must be integers 0-31");
    if (!(v instanceof Uint8Array) || !PCR_LENGTHS.has(v.length)) throw bad(`PCR${k} must be a 32, 48 or 64-byte string`);
    pcrs.set(k, Buffer.from(v));
  }
  const cabundleValue = p.get("cabundle");
  if (!Array.isArray(cabundleValue) || cabundleValue.length === 0 || cabundleValue.length > 8) throw bad("cabundle must be an array of 1 to 8 certificates");
  const cabundle = cabundleValue.map((c) => {
    if (!(c instanceof Uint8Array) || c.length === 0) throw bad("cabundle entries must be byte strings");
    return c;
  });
  return {
    protectedRaw,
    payloadRaw,
    signature,
    alg,
    moduleId: text("module_id"),
    digest: text("digest"),
    timestamp: new Date(ts),
    pcrs,
    certificate: bstr("certificate"),
    cabundle,
    publicKey: optional("public_key"),
    userData: optional("user_data"),
    nonce: optional("nonce"),
  };
}

function decodeStrict(b: Uint8Array): CborValue {
  try {
    return decodeCbor(b);
  } catch (e) {
    if (e instanceof CborError) throw bad(e.message);
    throw e;
  }
}
