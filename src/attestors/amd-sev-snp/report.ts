import { snpError } from "./errors.js";

/**
 * The SEV-SNP ATTESTATION_REPORT (AMD SEV-SNP ABI specification, "ATTESTATION_REPORT
 * Structure"): 1184 bytes, little-endian, versions 2, 3 and 5. The signature covers bytes
 * 0x000-0x29F; r and s are 72-byte little-endian fields at 0x2A0 and 0x2E8.
 */
export const REPORT_SIZE = 0x4a0;
export const SIGNED_LENGTH = 0x2a0;
const SUPPORTED_VERSIONS = new Set([2, 3, 5]);

export type Product = "Milan" | "Genoa" | "Turin";

/** TCB_VERSION: Milan and Genoa (bootloader, TEE, SNP, microcode); Turin adds FMC first. */
export interface Tcb {
  fmc?: number | undefined;
  bootloader: number;
  tee: number;
  snp: number;
  microcode: number;
  raw: bigint;
}

export interface SnpReport {
  raw: Buffer;
  version: number;
  guestSvn: number;
  policy: bigint;
  familyId: Buffer;
  imageId: Buffer;
  vmpl: number;
  signatureAlgo: number;
  currentTcb: bigint;
  platformInfo: bigint;
  authorKeyEn: boolean;
  maskChipKey: boolean;
  /** 0: VCEK, 1: VLEK, 7: none. */
  signingKey: number;
  reportData: Buffer;
  measurement: Buffer;
  hostData: Buffer;
  idKeyDigest: Buffer;
  authorKeyDigest: Buffer;
  reportId: Buffer;
  reportIdMa: Buffer;
  reportedTcbRaw: bigint;
  /** v3 and later: CPUID family, model, stepping, which name the product. */
  cpuid?: { family: number; model: number; stepping: number } | undefined;
  chipId: Buffer;
  committedTcb: bigint;
  launchTcb: bigint;
  signatureR: Buffer;
  signatureS: Buffer;
}

/** Guest policy bits (ABI spec, GUEST_POLICY). */
export const POLICY_BITS = { migrateMa: 1n << 18n, debug: 1n << 19n, singleSocket: 1n << 20n } as const;

const zero = (b: Buffer) => b.every((x) => x === 0);

export function parseSnpReport(bytes: Uint8Array): SnpReport {
  if (bytes.length !== REPORT_SIZE) throw snpError("snp_report_size", `the report is ${bytes.length} bytes, not ${REPORT_SIZE}`);
  const b = Buffer.from(bytes);
  const version = b.readUInt32LE(0x00);
  if (!SUPPORTED_VERSIONS.has(version)) throw snpError("snp_unknown_version", `report version ${version} is not 2, 3 or 5`);
  const keyInfo = b.readUInt32LE(0x48);
  const reserved = (from: number, to: number, what: string) => {
    if (!zero(b.subarray(from, to))) throw snpError("snp_reserved_nonzero", `reserved bytes ${what} are not zero`);
  };
  if (keyInfo >>> 5 !== 0) throw snpError("snp_reserved_nonzero", "reserved bits of the signer info (0x48) are set");
  reserved(0x4c, 0x50, "0x4C-0x4F");
  reserved(version >= 3 ? 0x18b : 0x188, 0x1a0, version >= 3 ? "0x18B-0x19F" : "0x188-0x19F");
  reserved(0x1eb, 0x1ec, "0x1EB");
  reserved(0x1ef, 0x1f0, "0x1EF");
  reserved(version >= 5 ? 0x208 : 0x1f8, SIGNED_LENGTH, version >= 5 ? "0x208-0x29F" : "0x1F8-0x29F");
  reserved(0x330, REPORT_SIZE, "after the signature");
  return {
    raw: b,
    version,
    guestSvn: b.readUInt32LE(0x04),
    policy: b.readBigUInt64LE(0x08),
    familyId: b.subarray(0x10, 0x20),
    imageId: b.subarray(0x20, 0x30),
    vmpl: b.readUInt32LE(0x30),
    signatureAlgo: b.readUInt32LE(0x34),
    currentTcb: b.readBigUInt64LE(0x38),
    platformInfo: b.readBigUInt64LE(0x40),
    authorKeyEn: (keyInfo & 1) === 1,
    maskChipKey: (keyInfo & 2) === 2,
    signingKey: (keyInfo >>> 2) & 7,
    reportData: b.subarray(0x50, 0x90),
    measurement: b.subarray(0x90, 0xc0),
    hostData: b.subarray(0xc0, 0xe0),
    idKeyDigest: b.subarray(0xe0, 0x110),
    authorKeyDigest: b.subarray(0x110, 0x140),
    reportId: b.subarray(0x140, 0x160),
    reportIdMa: b.subarray(0x160, 0x180),
    reportedTcbRaw: b.readBigUInt64LE(0x180),
    cpuid: version >= 3 ? { family: b[0x188]!, model: b[0x189]!, stepping: b[0x18a]! } : undefined,
    chipId: b.subarray(0x1a0, 0x1e0),
    committedTcb: b.readBigUInt64LE(0x1e0),
    launchTcb: b.readBigUInt64LE(0x1f0),
    signatureR: b.subarray(0x2a0, 0x2e8),
    signatureS: b.subarray(0x2e8, 0x330),
  };
}

/** The product from CPUID (v3+): family 19h model 0h-0Fh Milan, 10h-1Fh Genoa; family 1Ah model 0h-1Fh Turin. */
export function productFromCpuid(c: NonNullable<SnpReport["cpuid"]>): Product | undefined {
  if (c.family === 0x19 && c.model <= 0x0f) return "Milan";
  if (c.family === 0x19 && c.model >= 0x10 && c.model <= 0x1f) return "Genoa";
  if (c.family === 0x1a && c.model <= 0x1f) return "Turin";
  return undefined;
}

export function decodeTcb(raw: bigint, product: Product): Tcb {
  const byte = (i: number) => Number((raw >> BigInt(i * 8)) & 0xffn);
  return product === "Turin"
    ? { fmc: byte(0), bootloader: byte(1), tee: byte(2), snp: byte(3), microcode: byte(7), raw }
    : { bootloader: byte(0), tee: byte(1), snp: byte(6), microcode: byte(7), raw };
}
