import { randomBytes } from "node:crypto";
import { TPMA_OBJECT, TPM_ALG } from "./constants.js";
import { tpmError } from "./errors.js";
import { responseCodeName } from "./rc.js";
import { type PcrSelection, encodePcrSelections, readPcrSelections } from "./structures.js";
import { type TpmTransport, openTransport } from "./transport.js";
import { TpmReader, TpmWriter } from "./wire.js";

/** TPM 2.0 command codes and handles used by the node side (Part 2 §6.5, §7). */
const CC = {
  ActivateCredential: 0x147,
  Certify: 0x148,
  Sign: 0x15d,
  CreatePrimary: 0x131,
  NV_Read: 0x14e,
  PolicySecret: 0x151,
  Create: 0x153,
  Load: 0x157,
  Quote: 0x158,
  FlushContext: 0x165,
  NV_ReadPublic: 0x169,
  ReadPublic: 0x173,
  StartAuthSession: 0x176,
  PCR_Read: 0x17e,
} as const;
const ST_NO_SESSIONS = 0x8001;
const ST_SESSIONS = 0x8002;
const RH_OWNER = 0x40000001;
const RH_NULL = 0x40000007;
const RS_PW = 0x40000009;
const RH_ENDORSEMENT = 0x4000000b;
const SE_POLICY = 0x01;

/** An ECC NIST P-256 ECDSA-SHA256 signing key template with the given attributes. */
const p256SigningTemplate = (attributes: number): Buffer =>
  new TpmWriter()
    .u16(TPM_ALG.ECC)
    .u16(TPM_ALG.SHA256)
    .u32(attributes)
    .tpm2b(Buffer.alloc(0))
    .u16(TPM_ALG.NULL)
    .u16(TPM_ALG.ECDSA)
    .u16(TPM_ALG.SHA256)
    .u16(0x0003)
    .u16(TPM_ALG.NULL)
    .tpm2b(Buffer.alloc(0))
    .tpm2b(Buffer.alloc(0))
    .finish();
const FIXED_KEY = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.userWithAuth | TPMA_OBJECT.sign;
/** The attestation key: restricted, so it signs only TPM-generated structures. */
const AK_TEMPLATE = p256SigningTemplate(FIXED_KEY | TPMA_OBJECT.restricted);
/** An unrestricted signing key fixed to the TPM: an SVID key that never leaves the chip. */
const SIGNING_KEY_TEMPLATE = p256SigningTemplate(FIXED_KEY);

/** TCG EK Credential Profile 2.0 §B.3.3 low-range templates: policy = PolicySecret(TPM_RH_ENDORSEMENT). */
const EK_POLICY = Buffer.from("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa", "hex");
const EK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.adminWithPolicy | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt;
const ekTemplateHead = (type: number) =>
  new TpmWriter().u16(type).u16(TPM_ALG.SHA256).u32(EK_ATTRIBUTES).tpm2b(EK_POLICY).u16(TPM_ALG.AES).u16(128).u16(TPM_ALG.CFB).u16(TPM_ALG.NULL);
export const EK_TEMPLATES = {
  /** L-1: RSA 2048, exponent 0 (65537), unique = 256 zero bytes. */
  rsa2048: ekTemplateHead(TPM_ALG.RSA).u16(2048).u32(0).tpm2b(Buffer.alloc(256)).finish(),
  /** L-2: ECC NIST P-256, unique = two 32-byte zero coordinates. */
  "ecc-p256": ekTemplateHead(TPM_ALG.ECC).u16(0x0003).u16(TPM_ALG.NULL).tpm2b(Buffer.alloc(32)).tpm2b(Buffer.alloc(32)).finish(),
} as const;

const ST_HASHCHECK = 0x8024;

type Auth = { kind: "password" } | { kind: "policy"; handle: number };

/**
 * The node side of TPM 2.0: just the commands attestation needs, over a transport to swtpm or
 * /dev/tpmrm0. Commands run one at a time; response codes become tpm_command_failed errors.
 */
export class TpmClient {
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly transport: TpmTransport) {}

  static async open(spec: string): Promise<TpmClient> {
    return new TpmClient(await openTransport(spec));
  }

  close(): Promise<void> {
    return this.transport.close();
  }

  /** TPM2_CreatePrimary of an EK from its TCG template in the endorsement hierarchy: the same seed gives the same key. */
  async createEk(template: keyof typeof EK_TEMPLATES): Promise<{ handle: number; public: Buffer }> {
    const params = new TpmWriter()
      .tpm2b(new TpmWriter().tpm2b(Buffer.alloc(0)).tpm2b(Buffer.alloc(0)).finish())
      .tpm2b(EK_TEMPLATES[template])
      .tpm2b(Buffer.alloc(0))
      .u32(0)
      .finish();
    const r = await this.command(CC.CreatePrimary, [RH_ENDORSEMENT], [{ kind: "password" }], params);
    const size = r.params.readUInt16BE(0);
    return { handle: r.handles[0]!, public: r.params.subarray(0, 2 + size) };
  }

  /** TPM2_ReadPublic: the TPM2B_PUBLIC of a loaded or persistent object. */
  async readPublic(handle: number): Promise<Buffer> {
    const r = await this.command(CC.ReadPublic, [handle], [], Buffer.alloc(0));
    const out = r.params;
    const size = out.readUInt16BE(0);
    return out.subarray(0, 2 + size);
  }

  /** The EK certificate from NV (TCG EK Credential Profile indices), read in chunks with owner auth. */
  async readNv(index: number): Promise<Buffer> {
    const pub = await this.command(CC.NV_ReadPublic, [index], [], Buffer.alloc(0));
    const rr = new TpmReader(pub.params);
    const nvPublic = new TpmReader(rr.tpm2b());
    nvPublic.u32();
    nvPublic.u16();
    nvPublic.u32();
    nvPublic.tpm2b();
    const size = nvPublic.u16();
    const parts: Buffer[] = [];
    for (let offset = 0; offset < size; offset += 768) {
      const n = Math.min(768, size - offset);
      const r = await this.command(CC.NV_Read, [RH_OWNER, index], [{ kind: "password" }], new TpmWriter().u16(n).u16(offset).finish());
      parts.push(new TpmReader(r.params).tpm2b());
    }
    return Buffer.concat(parts);
  }

  /** Creates and loads an AK under the EK (which needs PolicySecret(TPM_RH_ENDORSEMENT) for each use). */
  createAk(ekHandle: number): Promise<{ handle: number; public: Buffer; private: Buffer }> {
    return this.createUnderEk(ekHandle, AK_TEMPLATE);
  }

  /** Creates and loads a TPM-resident ECC P-256 signing key under the EK. */
  createSigningKey(ekHandle: number): Promise<{ handle: number; public: Buffer; private: Buffer }> {
    return this.createUnderEk(ekHandle, SIGNING_KEY_TEMPLATE);
  }

  /** TPM2_Certify: `signHandle` (the AK) attests the Name of `objectHandle`, with `qualifyingData` as extraData. */
  async certify(objectHandle: number, signHandle: number, qualifyingData: Buffer): Promise<{ attest: Buffer; signature: Buffer }> {
    const r = await this.command(CC.Certify, [objectHandle, signHandle], [{ kind: "password" }, { kind: "password" }], new TpmWriter().tpm2b(qualifyingData).u16(TPM_ALG.NULL).finish());
    const rr = new TpmReader(r.params);
    const attest = rr.tpm2b();
    return { attest, signature: rr.bytes(rr.remaining) };
  }

  /** TPM2_Sign of a digest with an unrestricted key (a NULL hash-check ticket suffices for it). */
  async sign(keyHandle: number, digest: Buffer): Promise<Buffer> {
    const r = await this.command(CC.Sign, [keyHandle], [{ kind: "password" }], new TpmWriter().tpm2b(digest).u16(TPM_ALG.NULL).u16(ST_HASHCHECK).u32(RH_NULL).tpm2b(Buffer.alloc(0)).finish());
    return r.params;
  }

  private async createUnderEk(ekHandle: number, template: Buffer): Promise<{ handle: number; public: Buffer; private: Buffer }> {
    const created = await this.withEkPolicy((policy) =>
      this.command(CC.Create, [ekHandle], [policy], new TpmWriter().tpm2b(new TpmWriter().tpm2b(Buffer.alloc(0)).tpm2b(Buffer.alloc(0)).finish()).tpm2b(template).tpm2b(Buffer.alloc(0)).u32(0).finish()),
    );
    const r = new TpmReader(created.params);
    const priv = new TpmWriter().tpm2b(r.tpm2b()).finish();
    const pub = new TpmWriter().tpm2b(r.tpm2b()).finish();
    return { handle: await this.loadUnderEk(ekHandle, pub, priv), public: pub, private: priv };
  }

  /**
   * TPM2_Load of a key created under the EK, from its TPM2B_PUBLIC and TPM2B_PRIVATE (the private
   * part is wrapped by the EK's seed: only this TPM can load it). Call useEk first.
   */
  async loadUnderEk(ekHandle: number, tpm2bPublic: Buffer, tpm2bPrivate: Buffer): Promise<number> {
    const loaded = await this.withEkPolicy((policy) => this.command(CC.Load, [ekHandle], [policy], Buffer.concat([tpm2bPrivate, tpm2bPublic])));
    return loaded.handles[0]!;
  }

  /** TPM2_Quote with the AK's own scheme: the TPMS_ATTEST bytes and the TPMT_SIGNATURE bytes. */
  async quote(akHandle: number, qualifyingData: Buffer, selection: PcrSelection[]): Promise<{ attest: Buffer; signature: Buffer }> {
    const r = await this.command(CC.Quote, [akHandle], [{ kind: "password" }], new TpmWriter().tpm2b(qualifyingData).u16(TPM_ALG.NULL).bytes(encodePcrSelections(selection)).finish());
    const rr = new TpmReader(r.params);
    const attest = rr.tpm2b();
    return { attest, signature: rr.bytes(rr.remaining) };
  }

  /** TPM2_PCR_Read, repeated until every selected PCR was returned (the TPM returns at most 8 per call). */
  async pcrRead(selection: PcrSelection[]): Promise<Buffer> {
    const values: Buffer[] = [];
    for (const sel of selection) {
      for (const pcr of sel.pcrs) {
        const r = await this.command(CC.PCR_Read, [], [], encodePcrSelections([{ hashAlg: sel.hashAlg, pcrs: [pcr] }]));
        const rr = new TpmReader(r.params);
        rr.u32();
        readPcrSelections(rr);
        const count = rr.u32();
        if (count !== 1) throw tpmError("tpm_command_failed", `PCR ${pcr} is not allocated in this bank`);
        values.push(rr.tpm2b());
      }
    }
    return Buffer.concat(values);
  }

  /** TPM2_ActivateCredential: the AK (password) and the EK (policy) open what MakeCredential sealed. */
  async activateCredential(akHandle: number, ekHandle: number, credentialBlob: Buffer, secret: Buffer): Promise<Buffer> {
    const r = await this.withEkPolicy((policy) => this.command(CC.ActivateCredential, [akHandle, ekHandle], [{ kind: "password" }, policy], Buffer.concat([credentialBlob, secret])));
    return new TpmReader(r.params).tpm2b();
  }

  async flush(handle: number): Promise<void> {
    await this.command(CC.FlushContext, [], [], new TpmWriter().u32(handle).finish());
  }

  /** EKs with userWithAuth (swtpm's high-range ECC EK) take their empty password; the others PolicySecret. */
  private ekUsesPassword = false;

  async useEk(ekHandle: number): Promise<Buffer> {
    const pub = await this.readPublic(ekHandle);
    this.ekUsesPassword = (pub.readUInt32BE(2 + 4) & TPMA_OBJECT.userWithAuth) !== 0;
    return pub;
  }

  private async withEkPolicy<T>(use: (auth: Auth) => Promise<T>): Promise<T> {
    if (this.ekUsesPassword) return use({ kind: "password" });
    const s = await this.command(
      CC.StartAuthSession,
      [RH_NULL, RH_NULL],
      [],
      new TpmWriter().tpm2b(randomBytes(16)).tpm2b(Buffer.alloc(0)).u8(SE_POLICY).u16(TPM_ALG.NULL).u16(TPM_ALG.SHA256).finish(),
    );
    const session = s.handles[0]!;
    try {
      await this.command(CC.PolicySecret, [RH_ENDORSEMENT, session], [{ kind: "password" }], new TpmWriter().tpm2b(Buffer.alloc(0)).tpm2b(Buffer.alloc(0)).tpm2b(Buffer.alloc(0)).u32(0).finish());
      return await use({ kind: "policy", handle: session });
    } finally {
      await this.flush(session).catch(() => undefined);
    }
  }

  private command(code: number, handles: number[], auths: Auth[], params: Buffer): Promise<{ handles: number[]; params: Buffer }> {
    const run = this.queue.then(() => this.exchange(code, handles, auths, params));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** TPM_RC_RETRY, TPM_RC_YIELDED and TPM_RC_TESTING ask the caller to send the command again. */
  private async exchange(code: number, handles: number[], auths: Auth[], params: Buffer): Promise<{ handles: number[]; params: Buffer }> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.exchangeOnce(code, handles, auths, params);
      } catch (e) {
        const rc = (e as { rc?: number }).rc;
        if (attempt >= 10 || (rc !== 0x922 && rc !== 0x908 && rc !== 0x90a)) throw e;
        await new Promise((r) => setTimeout(r, 20 * (attempt + 1)));
      }
    }
  }

  private async exchangeOnce(code: number, handles: number[], auths: Auth[], params: Buffer): Promise<{ handles: number[]; params: Buffer }> {
    const body = new TpmWriter();
    for (const h of handles) body.u32(h);
    if (auths.length) {
      const area = new TpmWriter();
      for (const a of auths) {
        // Password sessions carry the (empty) password as their hmac; policy sessions carry none.
        area.u32(a.kind === "password" ? RS_PW : a.handle).tpm2b(Buffer.alloc(0)).u8(0x01).tpm2b(Buffer.alloc(0));
      }
      const areaBytes = area.finish();
      body.u32(areaBytes.length).bytes(areaBytes);
    }
    body.bytes(params);
    const b = body.finish();
    const cmd = new TpmWriter().u16(auths.length ? ST_SESSIONS : ST_NO_SESSIONS).u32(10 + b.length).u32(code).bytes(b).finish();
    const resp = await this.transport.send(cmd);
    const r = new TpmReader(resp);
    const tag = r.u16();
    const size = r.u32();
    const rc = r.u32();
    if (size !== resp.length) throw tpmError("tpm_size_mismatch", "the TPM's response size is wrong");
    if (rc !== 0) {
      throw Object.assign(tpmError("tpm_command_failed", `TPM command 0x${code.toString(16)} failed: ${responseCodeName(rc)} (0x${rc.toString(16)})`), { rc });
    }
    const outHandles = code === CC.StartAuthSession || code === CC.Load || code === CC.CreatePrimary ? [r.u32()] : [];
    let out: Buffer;
    if (tag === ST_SESSIONS) {
      const paramSize = r.u32();
      out = r.bytes(paramSize);
    } else out = r.bytes(r.remaining);
    return { handles: outHandles, params: out };
  }
}
