import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";
import type { Product } from "../../src/attestors/amd-sev-snp/report.js";
import { type TestCa, testCert } from "./test-pki.js";

export interface FakeAmd {
  ark: TestCa;
  ask: TestCa;
  signer: TestCa;
  kind: "VCEK" | "VLEK";
  product: Product;
  chipId: Buffer;
  tcb: { fmc?: number; bootloader: number; tee: number; snp: number; microcode: number };
}

const int = (n: number) => new Uint8Array([0x02, 0x01, n]);
const ia5 = (s: string) => new Uint8Array([0x16, s.length, ...Buffer.from(s, "ascii")]);

/** A fake AMD PKI: ARK → ASK (or ASVK) → VCEK (or VLEK) carrying the KDS extensions. For tests only. */
/** `ask`: sign the VCEK/VLEK under this intermediate instead of a fresh one (its cert names the issuer, its keys sign). */
export async function fakeAmd(o: { product?: Product; kind?: "VCEK" | "VLEK"; tcb?: FakeAmd["tcb"]; chipId?: Buffer; askName?: string; ask?: TestCa } = {}): Promise<FakeAmd> {
  const product = o.product ?? "Milan";
  const kind = o.kind ?? "VCEK";
  const tcb = o.tcb ?? { bootloader: 3, tee: 0, snp: 8, microcode: 115, ...(product === "Turin" ? { fmc: 1 } : {}) };
  const chipId = o.chipId ?? Buffer.from(webcrypto.getRandomValues(new Uint8Array(64)));
  const ark = await testCert({ name: `ARK-${product}` });
  const ask = o.ask ?? (await testCert({ name: o.askName ?? (kind === "VLEK" ? `SEV-VLEK-${product}` : `SEV-${product}`), issuer: ark, ca: true }));
  const ext = (oid: string, v: Uint8Array) => new x509.Extension(oid, false, v);
  const extensions = [
    ext("1.3.6.1.4.1.3704.1.2", ia5(`${product}-B0`)),
    ext("1.3.6.1.4.1.3704.1.3.1", int(tcb.bootloader)),
    ext("1.3.6.1.4.1.3704.1.3.2", int(tcb.tee)),
    ext("1.3.6.1.4.1.3704.1.3.3", int(tcb.snp)),
    ext("1.3.6.1.4.1.3704.1.3.8", int(tcb.microcode)),
    ...(tcb.fmc !== undefined ? [ext("1.3.6.1.4.1.3704.1.3.9", int(tcb.fmc))] : []),
    ...(kind === "VCEK" ? [ext("1.3.6.1.4.1.3704.1.4", product === "Turin" ? chipId.subarray(0, 8) : chipId)] : []),
  ];
  const signer = await testCert({ name: `SEV-${kind}`, issuer: ask, extensions });
  return { ark, ask, signer, kind, product, chipId: product === "Turin" ? Buffer.concat([chipId.subarray(0, 8), Buffer.alloc(56)]) : chipId, tcb };
}

export interface ReportFields {
  version?: number;
  reportData?: Buffer;
  measurement?: Buffer;
  hostData?: Buffer;
  policy?: bigint;
  vmpl?: number;
  guestSvn?: number;
  idKeyDigest?: Buffer;
  authorKeyDigest?: Buffer;
  tcb?: FakeAmd["tcb"];
  signingKey?: number;
}

/** Builds and signs a 1184-byte report as the AMD secure processor would (r, s little-endian in 72-byte fields). */
export async function signReport(amd: FakeAmd, f: ReportFields): Promise<Buffer> {
  const b = Buffer.alloc(0x4a0);
  const version = f.version ?? (amd.product === "Turin" ? 5 : amd.product === "Genoa" ? 3 : 2);
  b.writeUInt32LE(version, 0x00);
  b.writeUInt32LE(f.guestSvn ?? 1, 0x04);
  b.writeBigUInt64LE(f.policy ?? 0x30000n, 0x08);
  b.writeUInt32LE(f.vmpl ?? 0, 0x30);
  b.writeUInt32LE(1, 0x34);
  b.writeUInt32LE((f.signingKey ?? (amd.kind === "VLEK" ? 1 : 0)) << 2, 0x48);
  (f.reportData ?? Buffer.alloc(64)).copy(b, 0x50);
  (f.measurement ?? Buffer.alloc(48, 0x11)).copy(b, 0x90);
  (f.hostData ?? Buffer.alloc(32, 0x22)).copy(b, 0xc0);
  (f.idKeyDigest ?? Buffer.alloc(48, 0x33)).copy(b, 0xe0);
  (f.authorKeyDigest ?? Buffer.alloc(48)).copy(b, 0x110);
  const t = f.tcb ?? amd.tcb;
  const tcb = Buffer.alloc(8);
  if (amd.product === "Turin") [tcb[0], tcb[1], tcb[2], tcb[3], tcb[7]] = [t.fmc ?? 0, t.bootloader, t.tee, t.snp, t.microcode];
  else [tcb[0], tcb[1], tcb[6], tcb[7]] = [t.bootloader, t.tee, t.snp, t.microcode];
  tcb.copy(b, 0x180);
  tcb.copy(b, 0x38);
  if (version >= 3) {
    const [family, model] = amd.product === "Milan" ? [0x19, 0x01] : amd.product === "Genoa" ? [0x19, 0x11] : [0x1a, 0x02];
    b[0x188] = family;
    b[0x189] = model;
    b[0x18a] = 1;
  }
  amd.chipId.copy(b, 0x1a0);
  const sig = Buffer.from(await webcrypto.subtle.sign({ name: "ECDSA", hash: "SHA-384" }, amd.signer.keys.privateKey, b.subarray(0, 0x2a0)));
  Buffer.from(sig.subarray(0, 48)).reverse().copy(b, 0x2a0);
  Buffer.from(sig.subarray(48)).reverse().copy(b, 0x2e8);
  return b;
}
