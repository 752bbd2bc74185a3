import { webcrypto } from "node:crypto";
import { CborMap, CborTagged } from "../../src/cbor/decode.js";
import { encodeCbor } from "../../src/cbor/encode.js";
import { type TestCa, testCert } from "./test-pki.js";

/** A fake Nitro PKI: root → intermediate → enclave leaf (P-384), for synthetic documents in tests only. */
export async function fakeNitroPki(o: { leafNotAfter?: Date } = {}): Promise<{ root: TestCa; inter: TestCa; leaf: TestCa }> {
  const root = await testCert({ name: "fake aws.nitro-enclaves root" });
  const inter = await testCert({ name: "fake zonal", issuer: root, ca: true });
  const leaf = await testCert({ name: "fake enclave", issuer: inter, ...(o.leafNotAfter ? { notAfter: o.leafNotAfter } : {}) });
  return { root, inter, leaf };
}

export interface DocFields {
  moduleId?: string;
  digest?: string;
  timestamp?: number;
  pcrs?: Map<number, Buffer>;
  nonce?: Uint8Array | null;
  publicKey?: Uint8Array | null;
  alg?: number;
  tagged?: boolean;
}

export function pcrSet(values: Record<number, string> = {}): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  for (let i = 0; i < 16; i++) m.set(i, Buffer.alloc(48, 0));
  for (const [i, fill] of Object.entries(values)) m.set(Number(i), Buffer.from(fill.padEnd(96, "0").slice(0, 96), "hex"));
  return m;
}

/** Builds and signs a COSE_Sign1 attestation document the way the NSM does. */
export async function signNitroDocument(pki: { inter: TestCa; leaf: TestCa; root: TestCa }, f: DocFields): Promise<Buffer> {
  const pcrs = new CborMap();
  for (const [i, v] of f.pcrs ?? pcrSet({ 0: "aa", 1: "bb", 2: "cc" })) pcrs.set(i, v);
  const payload = new CborMap([
    ["module_id", f.moduleId ?? "i-0123456789abcdef0-enc0123456789abcdef"],
    ["digest", f.digest ?? "SHA384"],
    ["timestamp", f.timestamp ?? Date.now()],
    ["pcrs", pcrs],
    ["certificate", pki.leaf.der],
    ["cabundle", [pki.root.der, pki.inter.der]],
    ["public_key", f.publicKey === undefined ? null : f.publicKey],
    ["user_data", null],
    ["nonce", f.nonce === undefined ? null : f.nonce],
  ]);
  const protectedRaw = encodeCbor(new CborMap([[1, f.alg ?? -35]]));
  const payloadRaw = encodeCbor(payload);
  const toBeSigned = encodeCbor(["Signature1", protectedRaw, new Uint8Array(0), payloadRaw]);
  const sig = Buffer.from(await webcrypto.subtle.sign({ name: "ECDSA", hash: "SHA-384" }, pki.leaf.keys.privateKey, toBeSigned));
  const cose = [protectedRaw, new CborMap(), payloadRaw, sig];
  return encodeCbor(f.tagged ? new CborTagged(18, cose) : cose);
}
