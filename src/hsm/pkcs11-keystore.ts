import { type KeyObject, createHash, randomBytes } from "node:crypto";
import { HallmarkError } from "../errors.js";
import { isEcKeyType, keyPairTemplates, readPublicKey, signatureLength } from "./key-templates.js";
import {
  type Handle,
  type Pkcs11,
  closeModule,
  hsmError,
  isPkcs11Error,
  openModule,
  openUserSession,
  pkcs11js,
} from "./pkcs11-module.js";
import type { KeyStore, KeyType, SignatureScheme, Signer } from "./signer.js";

export interface Pkcs11KeyStoreOptions {
  modulePath: string;
  tokenLabel: string;
  /** The user PIN. Kept only to log in again after the token drops every session. */
  pin: string;
  /** Sessions in the signing pool (SoftHSM2 signs in parallel across sessions). */
  sessions?: number;
}

/** Errors after which a session is reopened (and the user logged in again) and the call retried once. */
const LOST_SESSION = [
  pkcs11js.CKR_SESSION_HANDLE_INVALID,
  pkcs11js.CKR_SESSION_CLOSED,
  pkcs11js.CKR_DEVICE_REMOVED,
  pkcs11js.CKR_USER_NOT_LOGGED_IN,
  pkcs11js.CKR_OBJECT_HANDLE_INVALID,
  pkcs11js.CKR_KEY_HANDLE_INVALID,
];

const SCHEMES: Record<SignatureScheme, { ec: boolean; hash?: "sha256" | "sha384"; mechanism: () => pkcs11js.Mechanism }> = {
  "ecdsa-sha256": { ec: true, hash: "sha256", mechanism: () => ({ mechanism: pkcs11js.CKM_ECDSA }) },
  "ecdsa-sha384": { ec: true, hash: "sha384", mechanism: () => ({ mechanism: pkcs11js.CKM_ECDSA }) },
  "rsa-pkcs1-sha256": { ec: false, mechanism: () => ({ mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }) },
  "rsa-pkcs1-sha384": { ec: false, mechanism: () => ({ mechanism: pkcs11js.CKM_SHA384_RSA_PKCS }) },
  "rsa-pss-sha256": {
    ec: false,
    mechanism: () => ({
      mechanism: pkcs11js.CKM_SHA256_RSA_PKCS_PSS,
      parameter: { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg: pkcs11js.CKM_SHA256, mgf: pkcs11js.CKG_MGF1_SHA256, saltLen: 32 },
    }),
  },
  "rsa-pss-sha384": {
    ec: false,
    mechanism: () => ({
      mechanism: pkcs11js.CKM_SHA384_RSA_PKCS_PSS,
      parameter: { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg: pkcs11js.CKM_SHA384, mgf: pkcs11js.CKG_MGF1_SHA384, saltLen: 48 },
    }),
  },
};

export interface KeyAttributes {
  sensitive: boolean;
  extractable: boolean;
  neverExtractable: boolean;
  alwaysSensitive: boolean;
  token: boolean;
  /** Whether reading CKA_VALUE of the private key was refused (it must be). */
  valueReadable: boolean;
}

/**
 * A KeyStore over one PKCS#11 token. Signing goes through a pool of sessions, one operation per
 * session at a time; a session the token dropped is reopened and the operation retried once.
 */
export async function openPkcs11KeyStore(opts: Pkcs11KeyStoreOptions): Promise<Pkcs11KeyStore> {
  const { pkcs11, slot } = openModule(opts.modulePath, opts.tokenLabel);
  try {
    const size = Math.max(1, opts.sessions ?? 4);
    const sessions: Handle[] = [];
    for (let i = 0; i < size; i++) sessions.push(openUserSession(pkcs11, slot, opts.pin));
    return new Pkcs11KeyStore(pkcs11, slot, opts.pin, sessions);
  } catch (e) {
    closeModule(pkcs11);
    throw e;
  }
}

export class Pkcs11KeyStore implements KeyStore {
  private readonly idle: Handle[];
  private readonly waiters: Array<(s: Handle) => void> = [];
  private closed = false;

  constructor(
    private readonly pkcs11: Pkcs11,
    private readonly slot: Handle,
    private readonly pin: string,
    sessions: Handle[],
  ) {
    this.idle = [...sessions];
  }

  async generate(label: string, keyType: KeyType): Promise<Signer> {
    return this.withSession(async (session) => {
      if (this.findObject(session, pkcs11js.CKO_PRIVATE_KEY, label)) {
        throw new HallmarkError("hsm_error", `a key labelled '${label}' already exists in the token`);
      }
      const t = keyPairTemplates(keyType, label, randomBytes(16));
      try {
        await this.pkcs11.C_GenerateKeyPairAsync(session, t.mechanism, t.publicKey, t.privateKey);
      } catch (e) {
        throw hsmError(e, "generate a key pair");
      }
      const signer = this.signerFor(session, label);
      if (!signer) throw new HallmarkError("hsm_key_not_found", `the key '${label}' vanished after generation`);
      return signer;
    });
  }

  async find(label: string): Promise<Signer | undefined> {
    return this.withSession(async (session) => this.signerFor(session, label));
  }

  async destroy(label: string): Promise<void> {
    this.handles.delete(label);
    await this.withSession(async (session) => {
      for (const cls of [pkcs11js.CKO_PRIVATE_KEY, pkcs11js.CKO_PUBLIC_KEY]) {
        const h = this.findObject(session, cls, label);
        if (h) this.pkcs11.C_DestroyObject(session, h);
      }
    });
  }

  /** The private key's protection attributes, read back from the token (tests assert them). */
  async describeKey(label: string): Promise<KeyAttributes> {
    return this.withSession(async (session) => {
      const h = this.findObject(session, pkcs11js.CKO_PRIVATE_KEY, label);
      if (!h) throw new HallmarkError("hsm_key_not_found", `no key labelled '${label}'`);
      const attrs = this.pkcs11.C_GetAttributeValue(session, h, [
        { type: pkcs11js.CKA_SENSITIVE },
        { type: pkcs11js.CKA_EXTRACTABLE },
        { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
        { type: pkcs11js.CKA_ALWAYS_SENSITIVE },
        { type: pkcs11js.CKA_TOKEN },
      ]);
      const bool = (i: number) => attrs[i]?.value?.[0] === 1;
      let valueReadable = true;
      try {
        this.pkcs11.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_VALUE }]);
      } catch (e) {
        if (isPkcs11Error(e, pkcs11js.CKR_ATTRIBUTE_SENSITIVE)) valueReadable = false;
        else throw hsmError(e, "read key attributes");
      }
      return { sensitive: bool(0), extractable: bool(1), neverExtractable: bool(2), alwaysSensitive: bool(3), token: bool(4), valueReadable };
    });
  }

  /** Test hook for the lost-session path: closes a pooled session behind the pool's back. */
  dropIdleSessionForTest(): void {
    const s = this.idle[0];
    if (s) this.pkcs11.C_CloseSession(s);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      this.pkcs11.C_CloseAllSessions(this.slot);
    } catch {
      // the token may be gone already
    }
    closeModule(this.pkcs11);
  }

  private signerFor(session: Handle, label: string): Signer | undefined {
    const pub = this.findObject(session, pkcs11js.CKO_PUBLIC_KEY, label);
    const priv = this.findObject(session, pkcs11js.CKO_PRIVATE_KEY, label);
    if (!pub || !priv) return undefined;
    const { keyType, publicKey } = readPublicKey(this.pkcs11, session, pub);
    return new Pkcs11Signer(this, label, keyType, publicKey);
  }

  /** Signs with the key `label`; handles are looked up per call so a re-login cannot stale them. */
  async signWith(label: string, keyType: KeyType, data: Uint8Array, scheme: SignatureScheme): Promise<Uint8Array> {
    const spec = SCHEMES[scheme];
    if (!spec || spec.ec !== isEcKeyType(keyType)) {
      throw new HallmarkError("hsm_error", `signature scheme ${scheme} does not fit a ${keyType} key`);
    }
    const input = spec.hash ? createHash(spec.hash).update(data).digest() : Buffer.from(data);
    const out = Buffer.alloc(signatureLength(keyType));
    return this.withSession(async (session) => {
      const key = this.cachedPrivateHandle(session, label);
      this.pkcs11.C_SignInit(session, spec.mechanism(), key);
      return this.pkcs11.C_SignAsync(session, input, out);
    });
  }

  private readonly handles = new Map<string, Handle>();

  private cachedPrivateHandle(session: Handle, label: string): Handle {
    let h = this.handles.get(label);
    if (!h) {
      h = this.findObject(session, pkcs11js.CKO_PRIVATE_KEY, label);
      if (!h) throw new HallmarkError("hsm_key_not_found", `no key labelled '${label}' in the token`);
      this.handles.set(label, h);
    }
    return h;
  }

  private findObject(session: Handle, cls: number, label: string): Handle | undefined {
    this.pkcs11.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: cls },
      { type: pkcs11js.CKA_LABEL, value: label },
    ]);
    try {
      const found = this.pkcs11.C_FindObjects(session, 2);
      if (found.length > 1) throw new HallmarkError("hsm_error", `several keys are labelled '${label}'`);
      return found[0];
    } finally {
      this.pkcs11.C_FindObjectsFinal(session);
    }
  }

  /** Borrows a session for one operation; a lost session is reopened and the operation retried once. */
  private async withSession<T>(op: (session: Handle) => Promise<T>): Promise<T> {
    if (this.closed) throw new HallmarkError("hsm_unavailable", "the HSM connection is closed");
    let session = await this.acquire();
    try {
      try {
        return await op(session);
      } catch (e) {
        if (!isPkcs11Error(e, ...LOST_SESSION)) throw e instanceof HallmarkError ? e : hsmError(e, "sign");
        session = this.reopen(session);
        this.handles.clear();
        return await op(session).catch((e2: unknown) => {
          throw e2 instanceof HallmarkError ? e2 : hsmError(e2, "sign after reopening its session");
        });
      }
    } finally {
      this.release(session);
    }
  }

  private reopen(lost: Handle): Handle {
    try {
      this.pkcs11.C_CloseSession(lost);
    } catch {
      // it is gone already
    }
    return openUserSession(this.pkcs11, this.slot, this.pin);
  }

  private acquire(): Promise<Handle> {
    const s = this.idle.pop();
    if (s) return Promise.resolve(s);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private release(s: Handle): void {
    const next = this.waiters.shift();
    if (next) next(s);
    else this.idle.push(s);
  }
}

class Pkcs11Signer implements Signer {
  constructor(
    private readonly store: Pkcs11KeyStore,
    readonly label: string,
    readonly keyType: KeyType,
    readonly publicKey: KeyObject,
  ) {}

  sign(data: Uint8Array, scheme: SignatureScheme): Promise<Uint8Array> {
    return this.store.signWith(this.label, this.keyType, data, scheme);
  }
}
