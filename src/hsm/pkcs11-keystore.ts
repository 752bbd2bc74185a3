import { type KeyObject, createHash, randomBytes } from "node:crypto";
import { HallmarkError } from "../errors.js";
import { isEcKeyType, keyPairTemplates, readPublicKey, signatureLength } from "./key-templates.js";
import { type KeyUse, assertMechanisms, mechanismNeeds, signMechanism } from "./mechanisms.js";
import {
  type Handle,
  type Pkcs11,
  hsmError,
  isPkcs11Error,
  openModule,
  openUserSession,
  pkcs11js,
  releaseModule,
  reloadToken,
} from "./pkcs11-module.js";
import {
  type KeyStore,
  type KeyType,
  type PureSignatureScheme,
  SCHEME_PARAMETERS,
  type SignatureScheme,
  type Signer,
  type StoredKeyObject,
} from "./signer.js";

export interface Pkcs11KeyStoreOptions {
  modulePath: string;
  tokenLabel: string;
  /** The user PIN. Kept only to log in again after the token drops every session. */
  pin: string;
  /** Sessions in the signing pool (SoftHSM2 signs in parallel across sessions). */
  sessions?: number;
  /**
   * "async": C_SignAsync on the libuv thread pool, leaving the event loop free while a device or
   * a network HSM works. "sync": C_Sign on the event loop, blocking for the whole operation but
   * without the thread hop, which costs more CPU than a software token's signature itself.
   * "auto" (default): sync for SoftHSM2 (a library computing in our own process), async for any
   * other module. See signingModeFor.
   */
  signing?: HsmSigningMode;
  /**
   * Sign with a session copy of each token key (C_CopyObject with CKA_TOKEN false, made once per
   * key and process; as sensitive and unextractable as the token key, since PKCS#11 lets a copy
   * only tighten those): SoftHSM2 checks a token object's files on every C_SignInit, a session
   * object's not. Default: on for SoftHSM2, off for any other module, whose keys may not be copyable.
   */
  sessionCopies?: boolean;
  /** The keys the configuration will generate and sign with: the token must offer their mechanisms (hsm_mechanism_missing). */
  requiredKeyUses?: readonly KeyUse[] | undefined;
}

const KEY_TYPES: readonly KeyType[] = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "ed25519"];

/** Errors after which a session is reopened (and the user logged in again) and the call retried once. */
const LOST_SESSION = [
  pkcs11js.CKR_SESSION_HANDLE_INVALID,
  pkcs11js.CKR_SESSION_CLOSED,
  pkcs11js.CKR_DEVICE_REMOVED,
  pkcs11js.CKR_USER_NOT_LOGGED_IN,
  pkcs11js.CKR_OBJECT_HANDLE_INVALID,
  pkcs11js.CKR_KEY_HANDLE_INVALID,
];

export interface KeyAttributes {
  sensitive: boolean;
  extractable: boolean;
  neverExtractable: boolean;
  alwaysSensitive: boolean;
  token: boolean;
  /** Whether the token gave out the private key's secret (CKA_VALUE; RSA: CKA_PRIVATE_EXPONENT, CKA_PRIME_1). Must be false. */
  valueReadable: boolean;
}

/**
 * A KeyStore over one PKCS#11 token. Signing goes through a pool of sessions, one operation per
 * session at a time; a session the token dropped is reopened and the operation retried once.
 */
export async function openPkcs11KeyStore(opts: Pkcs11KeyStoreOptions): Promise<Pkcs11KeyStore> {
  const { pkcs11, slot: found } = await openModule(opts.modulePath, opts.tokenLabel);
  try {
    assertMechanisms(pkcs11, found, opts.tokenLabel, mechanismNeeds(opts.requiredKeyUses ?? []));
  } catch (e) {
    releaseModule(pkcs11);
    throw e;
  }
  const size = Math.max(1, opts.sessions ?? 4);
  const sessions: Handle[] = [];
  let slot = found;
  // Between attempts the module is reloaded: the failed login may have left our view stale (reloadModule).
  const reload = async () => {
    slot = await reloadToken(pkcs11, opts.tokenLabel);
  };
  try {
    sessions.push(await loginRetryingBusyToken(() => openUserSession(pkcs11, slot, opts.pin), 5, reload));
    for (let i = 1; i < size; i++) sessions.push(openUserSession(pkcs11, slot, opts.pin));
    const mode = { signing: signingModeFor(opts.signing ?? "auto", pkcs11), sessionCopies: opts.sessionCopies ?? isSoftHsm(pkcs11) };
    return new Pkcs11KeyStore(pkcs11, { label: opts.tokenLabel, slot }, opts.pin, sessions, mode);
  } catch (e) {
    for (const s of sessions) closeQuietly(pkcs11, s);
    releaseModule(pkcs11);
    throw e;
  }
}

export type HsmSigningMode = "auto" | "async" | "sync";

/**
 * "auto" resolved against the module: SoftHSM2 signs in our own process with nothing to wait
 * for, so a sign on the thread pool only adds work (measured here with a token-resident P-256
 * key: C_SignInit + C_Sign 83 µs of CPU on the event loop, 113 µs through C_SignAsync on four
 * sessions). Any other module may wait on a device or a network: the event loop must not.
 */
export function signingModeFor(mode: HsmSigningMode, pkcs11: Pkcs11): "async" | "sync" {
  if (mode !== "auto") return mode;
  return isSoftHsm(pkcs11) ? "sync" : "async";
}

/** A failure of the module itself (hsm_error), as opposed to a refusal with a code of its own (a wrong PIN, a key that exists). */
const isModuleFailure = (e: unknown) => e instanceof HallmarkError && e.code === "hsm_error";

const isSoftHsm = (pkcs11: Pkcs11) => pkcs11.C_GetInfo().manufacturerID.trim() === "SoftHSM";

/**
 * The first login, tried again a few times when the token fails it for a reason other than the
 * PIN: SoftHSM2's file-backed token can fail a login while another process is writing the token's
 * files (replicas starting together on one token, seen in CI), and `beforeRetry` may reload the
 * module's view of it. A refused PIN is never retried.
 */
export async function loginRetryingBusyToken(login: () => Handle, attempts = 5, beforeRetry: () => void | Promise<void> = () => undefined): Promise<Handle> {
  for (let attempt = 1; ; attempt++) {
    try {
      return login();
    } catch (e) {
      if (!isModuleFailure(e) || attempt >= attempts) throw e;
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      await beforeRetry();
    }
  }
}

export class Pkcs11KeyStore implements KeyStore {
  private readonly idle: Handle[];
  /** Every session of this store, idle or busy: another store may share the module and slot. */
  private readonly owned: Set<Handle>;
  private readonly waiters: Array<{ resolve: (s: Handle) => void; reject: (e: Error) => void }> = [];
  private closed = false;
  private reopened = 0;
  private reloaded = 0;
  /** The reload under way (see reloadView): concurrent finds share it instead of each draining the pool. */
  private reloading: Promise<void> | undefined;

  constructor(
    private readonly pkcs11: Pkcs11,
    /** The token: its slot is looked up again by label after a reload. */
    private readonly token: { label: string; slot: Handle },
    private readonly pin: string,
    sessions: Handle[],
    /** How this store signs: "auto" resolved against the module (signingModeFor), and with what (sessionCopies). */
    private readonly mode: { signing: "async" | "sync"; sessionCopies: boolean },
  ) {
    this.idle = [...sessions];
    this.owned = new Set(sessions);
  }

  /** How this store signs: "auto" resolved against the module (signingModeFor). */
  get signing(): "async" | "sync" {
    return this.mode.signing;
  }

  /** Whether it signs with session copies of the token keys (see Pkcs11KeyStoreOptions.sessionCopies). */
  get sessionCopies(): boolean {
    return this.mode.sessionCopies;
  }

  async generate(label: string, keyType: KeyType): Promise<Signer> {
    if (!KEY_TYPES.includes(keyType)) throw new HallmarkError("hsm_key_type_unsupported", `unsupported key type ${String(keyType)}`);
    // One generation at a time, so two calls for one label cannot both pass the existence check.
    const result = this.generating.then(() => this.generateReloading(label, keyType));
    this.generating = result.catch(() => undefined);
    return result;
  }

  private generating: Promise<unknown> = Promise.resolve();

  /**
   * A stale view of the token (reloadModule) refuses to create objects (SoftHSM2 answers
   * CKR_GENERAL_ERROR), so after a failure of the module the token is read again and the
   * generation tried once more; its existence check runs again first.
   */
  private async generateReloading(label: string, keyType: KeyType): Promise<Signer> {
    try {
      return await this.generateNow(label, keyType);
    } catch (e) {
      if (!isModuleFailure(e)) throw e;
      await this.reloadView();
      return this.generateNow(label, keyType);
    }
  }

  private async generateNow(label: string, keyType: KeyType): Promise<Signer> {
    return this.withSession("generate a key pair", async (session) => {
      if (this.findObject(session, pkcs11js.CKO_PRIVATE_KEY, label) || this.findObject(session, pkcs11js.CKO_PUBLIC_KEY, label)) {
        throw new HallmarkError("hsm_key_exists", `a key labelled '${label}' already exists in the token`);
      }
      // Both halves carry the label from the one C_GenerateKeyPair call (never set afterwards), so
      // whatever half a crash leaves behind is found again by its label.
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

  async find(label: string, o: { recorded?: boolean } = {}): Promise<Signer | undefined> {
    const lookUp = () => this.withSession("find a key", async (session) => this.signerFor(session, label));
    const found = await lookUp();
    if (found || !o.recorded) return found;
    // Recorded but not shown: our view of the token may be stale (reloadModule), so read it again once.
    await this.reloadView();
    return lookUp();
  }

  /** How many times the module was reloaded: a recorded key not shown, or a key generation failed. */
  get viewsReloaded(): number {
    return this.reloaded;
  }

  /**
   * Reloads the module (reloadModule) once every session of this store is idle, then opens a
   * fresh pool: no operation of ours is inside the module while it is finalised.
   */
  private reloadView(): Promise<void> {
    this.reloading ??= (async () => {
      const held: Handle[] = [];
      try {
        for (let n = this.owned.size; held.length < n; ) held.push(await this.acquire());
        this.reloaded++;
        this.handles.clear();
        this.token.slot = await reloadToken(this.pkcs11, this.token.label);
        for (const [i, old] of held.entries()) held[i] = this.reopen(old);
      } finally {
        for (const s of held) this.release(s);
        this.reloading = undefined;
      }
    })();
    return this.reloading;
  }

  async destroy(label: string): Promise<void> {
    const copy = this.mode.sessionCopies ? this.handles.get(label) : undefined;
    this.handles.delete(label);
    await this.withSession("destroy a key", async (session) => {
      if (copy) destroyQuietly(this.pkcs11, session, copy);
      for (const cls of [pkcs11js.CKO_PRIVATE_KEY, pkcs11js.CKO_PUBLIC_KEY]) {
        const h = this.findObject(session, cls, label);
        if (h) this.pkcs11.C_DestroyObject(session, h);
      }
    });
  }

  async listKeyObjects(prefix: string): Promise<StoredKeyObject[]> {
    return this.withSession("list key objects", async (session) => {
      const out: StoredKeyObject[] = [];
      for (const [cls, objectClass] of [
        [pkcs11js.CKO_PUBLIC_KEY, "public-key"],
        [pkcs11js.CKO_PRIVATE_KEY, "private-key"],
      ] as const) {
        for (const h of this.findAll(session, [{ type: pkcs11js.CKA_CLASS, value: cls }])) {
          // CKA_LABEL is readable on a sensitive private key: it is the key's name, not its value.
          const [attr] = this.pkcs11.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_LABEL }]);
          const label = attr?.value?.toString("utf8") ?? "";
          if (label.startsWith(prefix)) out.push({ label, objectClass });
        }
      }
      return out.sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : a.objectClass < b.objectClass ? -1 : 1));
    });
  }

  async countUnlabelledObjects(): Promise<number> {
    return this.withSession("count unlabelled objects", async (session) => this.findAll(session, [{ type: pkcs11js.CKA_LABEL, value: Buffer.alloc(0) }]).length);
  }

  /**
   * The private key's protection attributes, read back from the token (tests assert them); with
   * `signingHandle`, those of the handle signatures are made with (its session copy, see
   * sessionCopies), made first if need be.
   */
  async describeKey(label: string, o: { signingHandle?: boolean } = {}): Promise<KeyAttributes> {
    return this.withSession("read key attributes", async (session) => {
      const h = o.signingHandle ? this.cachedPrivateHandle(session, label) : this.findObject(session, pkcs11js.CKO_PRIVATE_KEY, label);
      if (!h) throw new HallmarkError("hsm_key_not_found", `no key labelled '${label}'`);
      const attrs = this.pkcs11.C_GetAttributeValue(session, h, [
        { type: pkcs11js.CKA_SENSITIVE },
        { type: pkcs11js.CKA_EXTRACTABLE },
        { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
        { type: pkcs11js.CKA_ALWAYS_SENSITIVE },
        { type: pkcs11js.CKA_TOKEN },
        { type: pkcs11js.CKA_KEY_TYPE },
      ]);
      const bool = (i: number) => attrs[i]?.value?.[0] === 1;
      const isRsa = attrs[5]?.value?.[0] === pkcs11js.CKK_RSA;
      // The secret itself: the scalar of an EC key, the private exponent and a prime of an RSA key.
      const secrets = isRsa ? [pkcs11js.CKA_PRIVATE_EXPONENT, pkcs11js.CKA_PRIME_1] : [pkcs11js.CKA_VALUE];
      let valueReadable = false;
      for (const type of secrets) {
        try {
          this.pkcs11.C_GetAttributeValue(session, h, [{ type }]);
          valueReadable = true;
        } catch (e) {
          if (!isPkcs11Error(e, pkcs11js.CKR_ATTRIBUTE_SENSITIVE)) throw e;
        }
      }
      return { sensitive: bool(0), extractable: bool(1), neverExtractable: bool(2), alwaysSensitive: bool(3), token: bool(4), valueReadable };
    });
  }

  /** How many pooled sessions were found lost and reopened since the store opened. */
  get sessionsReopened(): number {
    return this.reopened;
  }

  /** Test hook for the lost-session path: closes every idle pooled session behind the pool's back. */
  dropIdleSessionsForTest(): number {
    for (const s of this.idle) this.pkcs11.C_CloseSession(s);
    return this.idle.length;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.reject(closedError());
    // Only our own sessions: C_CloseAllSessions would close those of a store sharing the slot.
    for (const s of this.owned) closeQuietly(this.pkcs11, s);
    this.owned.clear();
    this.idle.length = 0;
    releaseModule(this.pkcs11);
  }

  private signerFor(session: Handle, label: string): Signer | undefined {
    const pub = this.findObject(session, pkcs11js.CKO_PUBLIC_KEY, label);
    const priv = this.findObject(session, pkcs11js.CKO_PRIVATE_KEY, label);
    if (!pub || !priv) return undefined;
    const { keyType, publicKey } = readPublicKey(this.pkcs11, session, pub);
    return new Pkcs11Signer(this, label, keyType, publicKey);
  }

  /** Signs with the key `label`; handles are looked up per call so a re-login cannot stale them. */
  async signWith(label: string, keyType: KeyType, data: Uint8Array, scheme: SignatureScheme | PureSignatureScheme): Promise<Uint8Array> {
    const input = this.signatureInput(keyType, data, scheme);
    const out = Buffer.alloc(signatureLength(keyType));
    return this.withSession("sign", async (session) => {
      const key = this.cachedPrivateHandle(session, label);
      this.pkcs11.C_SignInit(session, signMechanism(scheme), key);
      // SoftHSM2 answers C_Sign over zero bytes with CKR_ARGUMENTS_BAD; a multi-part signature
      // with no parts is the same signature.
      if (input.length === 0) {
        return this.signing === "sync" ? this.pkcs11.C_SignFinal(session, out) : this.pkcs11.C_SignFinalAsync(session, out);
      }
      return this.signing === "sync" ? this.pkcs11.C_Sign(session, input, out) : this.pkcs11.C_SignAsync(session, input, out);
    });
  }

  /** What the token signs for a scheme: a digest for ECDSA, the message for RSA and Ed25519. */
  private signatureInput(keyType: KeyType, data: Uint8Array, scheme: SignatureScheme | PureSignatureScheme): Buffer {
    const mismatch = () => new HallmarkError("hsm_scheme_mismatch", `signature scheme ${scheme} does not fit a ${keyType} key`);
    if (scheme === "ed25519" || keyType === "ed25519") {
      if (scheme !== keyType) throw mismatch();
      // EdDSA is one-shot in the token (no multi-part C_SignFinal path), and nothing we sign is empty.
      if (data.length === 0) throw new HallmarkError("hsm_scheme_mismatch", "Ed25519 signing needs a non-empty message");
      return Buffer.from(data);
    }
    const params = SCHEME_PARAMETERS[scheme];
    if (!params || (params.family === "ecdsa") !== isEcKeyType(keyType)) throw mismatch();
    return params.family === "ecdsa" ? createHash(params.hash).update(data).digest() : Buffer.from(data);
  }

  private readonly handles = new Map<string, Handle>();

  /**
   * The handle signWith signs with: the token key, or its session copy (sessionCopies), made in
   * `session` and gone with it; signing with a copy whose session closed fails with
   * CKR_OBJECT_HANDLE_INVALID, a lost-session error, after which the handles are found again.
   */
  private cachedPrivateHandle(session: Handle, label: string): Handle {
    let h = this.handles.get(label);
    if (!h) {
      const key = this.findObject(session, pkcs11js.CKO_PRIVATE_KEY, label);
      if (!key) throw new HallmarkError("hsm_key_not_found", `no key labelled '${label}' in the token`);
      h = this.mode.sessionCopies ? this.pkcs11.C_CopyObject(session, key, [{ type: pkcs11js.CKA_TOKEN, value: false }]) : key;
      this.handles.set(label, h);
    }
    return h;
  }

  private findObject(session: Handle, cls: number, label: string): Handle | undefined {
    this.pkcs11.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: cls },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_TOKEN, value: true },
    ]);
    try {
      const found = this.pkcs11.C_FindObjects(session, 2);
      if (found.length > 1) throw new HallmarkError("hsm_error", `several keys are labelled '${label}'`);
      return found[0];
    } finally {
      this.pkcs11.C_FindObjectsFinal(session);
    }
  }

  /** Token objects only: the session copies of our keys (sessionCopies) are not the token's keys. */
  private findAll(session: Handle, template: pkcs11js.Template): Handle[] {
    this.pkcs11.C_FindObjectsInit(session, [...template, { type: pkcs11js.CKA_TOKEN, value: true }]);
    try {
      const all: Handle[] = [];
      for (let batch = this.pkcs11.C_FindObjects(session, 64); batch.length > 0; batch = this.pkcs11.C_FindObjects(session, 64)) all.push(...batch);
      return all;
    } finally {
      this.pkcs11.C_FindObjectsFinal(session);
    }
  }

  /**
   * Borrows a session for one operation. A lost session is reopened and the operation retried
   * once. After any other failure of the module the session is replaced too, without a retry: a
   * failed C_Sign can leave its operation active, and every later C_SignInit on that session
   * would fail with CKR_OPERATION_ACTIVE.
   */
  private async withSession<T>(what: string, op: (session: Handle) => Promise<T>): Promise<T> {
    if (this.closed) throw closedError();
    let session = await this.acquire();
    try {
      try {
        return await op(session);
      } catch (e) {
        if (e instanceof HallmarkError) throw e;
        const lost = isPkcs11Error(e, ...LOST_SESSION);
        session = this.reopen(session);
        if (!lost) throw hsmError(e, what);
        this.handles.clear();
      }
      try {
        return await op(session);
      } catch (e) {
        if (!(e instanceof HallmarkError)) session = this.reopen(session);
        throw hsmError(e, `${what} after reopening its session`);
      }
    } finally {
      this.release(session);
    }
  }

  /** Replaces a session; when that fails the old handle stays pooled, so the next use tries again. */
  private reopen(old: Handle): Handle {
    if (this.closed) throw closedError();
    const fresh = openUserSession(this.pkcs11, this.token.slot, this.pin);
    this.owned.add(fresh);
    this.owned.delete(old);
    closeQuietly(this.pkcs11, old);
    this.reopened++;
    return fresh;
  }

  private acquire(): Promise<Handle> {
    const s = this.idle.pop();
    if (s) return Promise.resolve(s);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  private release(s: Handle): void {
    if (this.closed) {
      closeQuietly(this.pkcs11, s);
      return;
    }
    const next = this.waiters.shift();
    if (next) next.resolve(s);
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

  sign(data: Uint8Array, scheme: SignatureScheme | PureSignatureScheme): Promise<Uint8Array> {
    return this.store.signWith(this.label, this.keyType, data, scheme);
  }
}

function closedError(): HallmarkError {
  return new HallmarkError("hsm_unavailable", "the HSM connection is closed");
}

function destroyQuietly(pkcs11: Pkcs11, session: Handle, object: Handle): void {
  try {
    pkcs11.C_DestroyObject(session, object);
  } catch {
    // a session copy already gone with its session: nothing left to destroy
  }
}

function closeQuietly(pkcs11: Pkcs11, session: Handle): void {
  try {
    pkcs11.C_CloseSession(session);
  } catch {
    // already closed, or the token is gone: nothing left to release
  }
}
