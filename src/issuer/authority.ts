import { X509Certificate, createHash, randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { HallmarkError } from "../errors.js";
import { timeOrderedUuid } from "../time-ordered-id.js";
import type { KeyStore, KeyType, Signer } from "../hsm/signer.js";
import type { Clock } from "../service/clock.js";
import type {
  AccessTokenSigner,
  AutomaticCaKeyChange,
  CaAdministration,
  IssuedJwt,
  IssuedWit,
  IssuedX509,
  RotationStep,
  SignedAccessToken,
  SvidIssuer,
  WitIssueRequest,
  X509IssueRequest,
} from "../service/ports.js";
import { normalizeSerial } from "../service/ports.js";
import type { SpiffeId, TrustDomain } from "../spiffe/id.js";
import type { CaKeyKind, CaKeyRecord, CaKeyRepository, CaKeyStatus, IssuedSvidRecord, StoreCoordination, SvidRepository } from "../store/types.js";
import { reconcileCaKeys } from "./ca-key-reconcile.js";
import { type JwtAuthority, bundlePem, jwtJwks, spiffeBundleJwks } from "./bundle.js";
import { checkSigningCertConformance } from "./conformance.js";
import { signCompactJws } from "./jws.js";
import { mintJwtSvid } from "./jwt-svid.js";
import { mintWitSvid } from "./wit-svid.js";
import { SCHEMES, jwtSchemeFor } from "./signature-formats.js";
import { createIntermediateCa, createRootCa } from "./x509-ca.js";
import { issueX509Svid } from "./x509-svid.js";

export interface UpstreamCa {
  /** The upstream CA certificate first, then its chain up to and including the root (DER). */
  chain: Buffer[];
  /** The upstream CA's key: an HSM key found by label, or a file signer. */
  signer: Signer;
}

/** Rotation by age: prepare the next key at `prepareAt` of the active key's life, activate it at `activateAt` (fractions, 0..1). */
export interface RotationSchedule {
  prepareAt: number;
  activateAt: number;
  checkIntervalSeconds: number;
}

export interface AuthorityOptions {
  trustDomain: TrustDomain;
  keyStore: KeyStore;
  caKeys: CaKeyRepository;
  svids: SvidRepository;
  clock: Clock;
  log: Logger;
  /** `ttlSeconds`: life of each CA certificate. `upstream`: intermediate mode; absent: self-signed root. */
  x509: { keyType: KeyType; ttlSeconds: number; upstream?: UpstreamCa | undefined };
  /** `keyTtlSeconds`: how long a JWT key signs before scheduled rotation (default: the CA TTL). */
  jwt: { keyType: KeyType; rsaPadding?: "pkcs1" | "pss"; keyTtlSeconds?: number; maxTtlSeconds?: number };
  /**
   * The WIT-SVID key: of the JWT key's type and padding (both sign JWS; one setting for both), a
   * key of its own since a bundle key has one `use`. `keyTtlSeconds` defaults to the JWT key's.
   * Absent: no WIT key, no WIT-SVIDs, no `wit-svid` keys in the bundle.
   */
  wit?: { keyTtlSeconds?: number; maxTtlSeconds?: number } | undefined;
  /**
   * The OAuth access-token key (RFC 9068): a key of its own, of `keyType`, published only in the
   * plain JWKS of /oauth2/jwks. A previous token key retires once the last access token it signed
   * has expired (`latestExpiry`, read from the access-token records). Absent: no token key.
   */
  token?: { keyType: KeyType; keyTtlSeconds?: number; latestExpiry: (keyId: string) => Promise<Date | undefined> } | undefined;
  refreshHintSeconds: number;
  rotation?: RotationSchedule | undefined;
  /**
   * Replicas sharing the key records: every key step runs under their common lock, after reading
   * the records again (a replica that lost the race finds the step taken and does nothing), and
   * the keys are read again whenever another replica announces a change. Absent: one process.
   */
  coordination?: Pick<StoreCoordination, "exclusively" | "onChange"> | undefined;
  /** Told of every key step the CA takes on its own (an administrator's steps are audited by whoever asked). */
  onAutomaticKeyChange?: ((change: AutomaticCaKeyChange) => Promise<void>) | undefined;
}

export interface LoadedKey {
  record: CaKeyRecord;
  signer: Signer;
}

export interface BundleContents {
  x509Authorities: Buffer[];
  jwtAuthorities: JwtAuthority[];
  witAuthorities: JwtAuthority[];
  sequence: number;
}

/** One step of a key's life, as rotation reports it. */
interface KeyStep {
  step: AutomaticCaKeyChange["step"];
  kind: CaKeyKind;
  keyId: string;
}

const PAST_TENSE: Record<KeyStep["step"], string> = { prepare: "prepared", activate: "activated", retire: "retired" };
/** "activated x509 key <id>": what `hallmark ca rotate` prints and the logs say. */
const describe = (s: KeyStep): string => `${PAST_TENSE[s.step]} ${s.kind} key ${s.keyId}`;

const PUBLISHED: ReadonlySet<CaKeyStatus> = new Set(["prepared", "active", "previous"]);
/** Every kind: their label prefixes are ours whether or not this CA creates keys of each. */
const ALL_KINDS: readonly CaKeyKind[] = ["x509", "jwt", "wit", "token"];
/** The replicas' common lock for key steps (an advisory lock on PostgreSQL). */
const ROTATION_LOCK = "ca-rotation";
const DEFAULT_SCHEDULE: RotationSchedule = { prepareAt: 0.5, activateAt: 0.75, checkIntervalSeconds: 60 };

/** The HSM label of a CA key: found again by it after a restart. */
export const caKeyLabel = (kind: CaKeyKind, id: string): string => `hallmark-${kind}-${id}`;

/**
 * The certificate authority: the X.509 CA key and the JWT-SVID key, both in the KeyStore (never
 * in process memory), found again by label after a restart; SVID issuance, each SVID checked
 * after signing and returned with the record its caller commits with the audit record; the bundle; and key rotation: prepare (new key published, not
 * signing) → activate (signing; the old key stays published as "previous") → retire (once the
 * last SVID it signed has expired, it leaves the bundle and is destroyed in the KeyStore).
 * Every change of the published keys bumps the bundle sequence.
 */
export class CertificateAuthority implements SvidIssuer, CaAdministration, AccessTokenSigner {
  private readonly loaded = new Map<string, LoadedKey>();
  private readonly listeners: Array<() => void> = [];
  /** The active CA certificate cross-signed by the previous key, by "active/previous" key ids. */
  private readonly crossCertificates = new Map<string, Buffer>();
  /** Rotation steps run one at a time: two concurrent prepares must not both create a key. */
  private rotationQueue: Promise<unknown> = Promise.resolve();
  /** The bundle sequence of the loaded keys: only ever raised (by our own steps, or by reading another replica's). */
  private sequence = 0;
  private stopHearing: (() => void) | undefined;

  constructor(private readonly o: AuthorityOptions) {}

  static async open(o: AuthorityOptions): Promise<CertificateAuthority> {
    const ca = new CertificateAuthority(o);
    await ca.init();
    return ca;
  }

  /**
   * Loads the published keys from the repository and the KeyStore, then clears what a crash in
   * key creation or retirement left behind (see reconcileCaKeys); creates and activates missing
   * keys on first start.
   */
  async init(): Promise<void> {
    await this.serialized(async () => {
      this.loaded.clear();
      this.sequence = await this.o.caKeys.bundleSequence();
      const records = await this.o.caKeys.list();
      for (const record of records) {
        if (!PUBLISHED.has(record.status)) continue;
        const signer = await this.o.keyStore.find(record.label, { recorded: true });
        if (!signer) throw new HallmarkError("hsm_key_not_found", `the ${record.kind} key '${record.label}' is recorded but not in the KeyStore`);
        if (record.kind === "x509" && !sameKey(signer, record.certificate)) {
          throw new HallmarkError("hsm_key_not_found", `the key labelled '${record.label}' does not match its CA certificate`);
        }
        this.loaded.set(record.id, { record, signer });
      }
      const upstream = this.o.x509.upstream?.signer.label;
      await reconcileCaKeys({
        keyStore: this.o.keyStore,
        caKeys: this.o.caKeys,
        log: this.o.log,
        prefixes: ALL_KINDS.map((kind) => caKeyLabel(kind, "")),
        records,
        keep: new Set(upstream ? [upstream] : []),
      });
    }, false);
    for (const kind of this.kinds()) {
      if (this.key(kind, "active")) continue;
      const now = this.o.clock();
      // Re-checked under the lock: replicas starting together on an empty database create one key.
      const steps = await this.serialized(async () =>
        this.key(kind, "active") ? [] : [...(this.key(kind, "prepared") ? [] : [await this.prepareNow(kind, now)]), await this.activateNow(kind, now)],
      );
      await this.reportAutomatic("start", steps);
      if (steps.length) this.o.log.info({ kind }, "created a new signing key in the KeyStore");
    }
    this.stopHearing = this.o.coordination?.onChange("caKeys", () => {
      this.local(() => this.reloadKeys()).catch((e: unknown) => this.o.log.warn({ code: (e as { code?: unknown }).code, detail: (e as Error).message }, "could not read the CA keys another replica changed; retrying at the next change or step"));
    });
  }

  // --- issuance (SvidIssuer) ---

  async issueX509(input: X509IssueRequest): Promise<IssuedX509> {
    const active = this.requireActive("x509");
    const leaf = await issueX509Svid({
      ca: { signer: active.signer, certificate: active.record.certificate! },
      spki: input.spki,
      spiffeId: this.member(input.spiffeId),
      dnsNames: input.dnsNames,
      ipAddresses: input.ipAddresses,
      ttlSeconds: input.ttlSeconds,
      now: input.now,
    });
    const svidRecord: IssuedSvidRecord = {
      // One spelling, the one request-time lookups use (a serial may start with a zero nibble).
      serial: normalizeSerial(leaf.serialHex),
      spiffeId: input.spiffeId.toString(),
      kind: "x509",
      nodeId: input.nodeId,
      caKeyId: active.record.id,
      issuedAt: input.now,
      notAfter: leaf.notAfter,
    };
    return { chain: [leaf.der, ...this.intermediates(active.record)], serial: leaf.serialHex, notAfter: leaf.notAfter, svidRecord };
  }

  async issueJwt(input: { spiffeId: SpiffeId; audience: string[]; ttlSeconds: number; issuer?: string; nodeId?: string; now: Date }): Promise<IssuedJwt> {
    const active = this.requireActive("jwt");
    // The jti names the token's record, so that a JWT-SVID presented back to Hallmark (an OAuth
    // client assertion) is traced to the node it was issued to.
    const jti = timeOrderedUuid();
    const jwt = await mintJwtSvid({
      jti,
      signer: active.signer,
      scheme: this.jwtScheme(active),
      kid: active.record.kid!,
      spiffeId: this.member(input.spiffeId),
      audience: input.audience,
      ttlSeconds: input.ttlSeconds,
      issuer: input.issuer,
      now: input.now,
      maxTtlSeconds: this.o.jwt.maxTtlSeconds,
    });
    return {
      ...jwt,
      svidRecord: {
        // JWT-SVIDs have no serial; their jti keys the record (the repository's primary key).
        serial: `jwt-${jti}`,
        spiffeId: input.spiffeId.toString(),
        kind: "jwt",
        nodeId: input.nodeId,
        caKeyId: active.record.id,
        issuedAt: input.now,
        notAfter: jwt.expiresAt,
      },
    };
  }

  /** A WIT-SVID binding the workload's public key (`cnf.jwk`), signed by the WIT key; recorded like every SVID. */
  async issueWit(input: WitIssueRequest): Promise<IssuedWit> {
    const active = this.requireActive("wit");
    const wit = await mintWitSvid({
      signer: active.signer,
      scheme: this.jwtScheme(active),
      kid: active.record.kid!,
      spiffeId: this.member(input.spiffeId),
      publicKey: input.publicKeyJwk,
      ttlSeconds: input.ttlSeconds,
      now: input.now,
      maxTtlSeconds: this.o.wit?.maxTtlSeconds,
    });
    return {
      ...wit,
      svidRecord: { serial: `wit-${wit.jti}`, spiffeId: input.spiffeId.toString(), kind: "wit", nodeId: input.nodeId, caKeyId: active.record.id, issuedAt: input.now, notAfter: wit.expiresAt },
    };
  }

  /**
   * Signs the claims of an RFC 9068 access token (header typ at+jwt) with the active token key.
   * The claims are the caller's (src/oauth/access-token.ts); the key never leaves the KeyStore.
   */
  async signAccessToken(claims: { exp: number } & Record<string, unknown>): Promise<SignedAccessToken> {
    const active = this.requireActive("token");
    const scheme = this.jwtScheme(active);
    const kid = active.record.kid!;
    const token = await signCompactJws(active.signer, scheme, { typ: "at+jwt", alg: SCHEMES[scheme].jwsAlg, kid }, claims);
    return { token, kid, keyId: active.record.id, expiresAt: new Date(claims.exp * 1000) };
  }

  /** The access-token keys (prepared, active, previous) as a plain JWKS: `kid`, `alg`, `use` sig. */
  async accessTokenJwks(): Promise<Record<string, unknown>> {
    return jwtJwks(this.jwsAuthorities("token"));
  }

  /** Trust anchors: our CA certificates (root mode) or the upstream root (intermediate mode). */
  async x509Authorities(): Promise<Buffer[]> {
    const upstream = this.o.x509.upstream;
    if (upstream) {
      const root = upstream.chain[upstream.chain.length - 1];
      return root ? [root] : [];
    }
    return this.published("x509").map((k) => k.record.certificate!);
  }

  // --- the bundle (CaAdministration) ---

  /** Everything relying parties need: prepared, active and previous keys, and the sequence. */
  async bundle(): Promise<BundleContents> {
    return {
      x509Authorities: await this.x509Authorities(),
      jwtAuthorities: this.jwsAuthorities("jwt"),
      witAuthorities: this.jwsAuthorities("wit"),
      sequence: this.sequence,
    };
  }

  /**
   * Every node answer carries the bundle as PEM: encoded once per set of authorities (the same
   * certificate buffers until a rotation step or a key load replaces them), not once per request.
   */
  async bundlePem(): Promise<string> {
    const authorities = await this.x509Authorities();
    const last = this.lastBundlePem;
    if (last && last.authorities.length === authorities.length && last.authorities.every((der, i) => der === authorities[i])) return last.pem;
    const pem = bundlePem(authorities);
    this.lastBundlePem = { authorities, pem };
    return pem;
  }

  private lastBundlePem: { authorities: Buffer[]; pem: string } | undefined;

  async spiffeBundle(): Promise<Record<string, unknown>> {
    return spiffeBundleJwks({ ...(await this.bundle()), refreshHintSeconds: this.o.refreshHintSeconds });
  }

  async jwtJwks(): Promise<Record<string, unknown>> {
    return jwtJwks(this.jwsAuthorities("jwt"));
  }

  async keys(): Promise<Array<{ id: string; kind: string; status: string; notAfter?: string | undefined; kid?: string | undefined }>> {
    return [...this.loaded.values()].sort(byAge).map((k) => ({
      id: k.record.id,
      kind: k.record.kind,
      status: k.record.status,
      notAfter: k.record.notAfter?.toISOString(),
      kid: k.record.kid,
    }));
  }

  /**
   * What the server's own TLS chain carries after its SVID, in root mode while a previous X.509
   * key is still published: the active CA certificate cross-signed by that previous key. A client
   * whose bundle predates the rotation (it holds only the old root) then still verifies the
   * server, and learns the new root from the bundle the server returns; a client that holds the
   * new root verifies directly. In intermediate mode the upstream root never changes: nothing.
   */
  async crossSignedCertificates(now: Date = this.o.clock()): Promise<Buffer[]> {
    if (this.o.x509.upstream) return [];
    const active = this.key("x509", "active");
    const previous = this.key("x509", "previous");
    if (!active || !previous || !active.record.notAfter || !previous.record.notAfter) return [];
    const cacheKey = `${active.record.id}/${previous.record.id}`;
    const cached = this.crossCertificates.get(cacheKey);
    if (cached) return [cached];
    const remaining = Math.floor((active.record.notAfter.getTime() - now.getTime()) / 1000);
    if (remaining <= 0 || previous.record.notAfter.getTime() <= now.getTime()) return [];
    const cross = await createIntermediateCa({
      signer: active.signer,
      upstream: { signer: previous.signer, certificate: previous.record.certificate! },
      trustDomain: this.o.trustDomain,
      ttlSeconds: remaining,
      now,
    });
    this.crossCertificates.clear();
    this.crossCertificates.set(cacheKey, cross);
    return [cross];
  }

  /** The signing key and certificate of a kind, for benches and diagnostics (the key stays in the KeyStore). */
  activeKey(kind: CaKeyKind): LoadedKey {
    return this.requireActive(kind);
  }

  onBundleChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  // --- rotation ---

  async rotate(kind: CaKeyKind, step: RotationStep): Promise<{ changed: string[]; notes?: string[] }> {
    if (!this.kinds().includes(kind)) throw new HallmarkError("invalid_request", `this CA keeps no ${kind} key`);
    switch (step) {
      case "prepare":
        return { changed: [await this.prepare(kind)] };
      case "activate":
        return { changed: [await this.activate(kind)] };
      case "retire":
        return this.withRetireNotes(kind, await this.retireExpired(this.o.clock(), kind));
      default:
        return this.withRetireNotes(kind, await this.rotateIfDue(this.o.clock(), this.o.rotation, kind));
    }
  }

  /** When nothing changed, says why: which previous key waits, and until when its last SVID lives. */
  private async withRetireNotes(kind: CaKeyKind, changed: string[]): Promise<{ changed: string[]; notes: string[] }> {
    if (changed.length) return { changed, notes: [] };
    const previous = [...this.loaded.values()].filter((k) => k.record.kind === kind && k.record.status === "previous");
    if (previous.length === 0) {
      const active = this.key(kind, "active");
      return { changed, notes: [`nothing to retire: no previous ${kind} key (the active one is ${active?.record.id ?? "none"})`] };
    }
    const notes: string[] = [];
    for (const k of previous) {
      const last = await this.latestExpiry(k.record);
      notes.push(`previous ${kind} key ${k.record.id} stays published until its last SVID expires at ${last?.toISOString() ?? "(none recorded)"}`);
    }
    return { changed, notes };
  }

  /** Runs `rotateIfDue` every checkInterval, when a schedule is configured. Returns the stop function. */
  startScheduledRotation(): () => void {
    const schedule = this.o.rotation;
    if (!schedule) return () => undefined;
    const timer = setInterval(() => {
      // Steps taken before a later one fails happened all the same: they are reported either way.
      const steps: KeyStep[] = [];
      this.serialized(() => this.rotateDueNow(this.o.clock(), schedule, undefined, steps))
        .catch((e: unknown) => this.o.log.error({ err: e }, "scheduled rotation failed"))
        .then(async () => {
          if (steps.length) this.o.log.info({ changed: steps.map(describe) }, "scheduled rotation");
          await this.reportAutomatic("schedule", steps);
        })
        .catch((e: unknown) => this.o.log.error({ err: e }, "a scheduled rotation step could not be audited"));
    }, schedule.checkIntervalSeconds * 1000);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** Creates the next key of `kind` in the KeyStore (and, for X.509, its CA certificate) and publishes it. */
  async prepare(kind: CaKeyKind, now: Date = this.o.clock()): Promise<string> {
    return describe(await this.serialized(() => this.prepareNow(kind, now)));
  }

  /** The prepared key starts signing; the active one becomes "previous" and stays in the bundle. */
  async activate(kind: CaKeyKind, now: Date = this.o.clock()): Promise<string> {
    return describe(await this.serialized(() => this.activateNow(kind, now)));
  }

  /** Previous keys whose last SVID has expired at `now` leave the bundle and are destroyed in the KeyStore. */
  async retireExpired(now: Date = this.o.clock(), kind?: CaKeyKind): Promise<string[]> {
    return (await this.serialized(() => this.retireNow(now, kind))).map(describe);
  }

  /** Whatever the schedule calls for at `now`: retire expired previous keys, prepare at prepareAt, activate at activateAt. */
  async rotateIfDue(now: Date = this.o.clock(), schedule: RotationSchedule = this.o.rotation ?? DEFAULT_SCHEDULE, kind?: CaKeyKind): Promise<string[]> {
    return (await this.serialized(() => this.rotateDueNow(now, schedule, kind))).map(describe);
  }

  async close(): Promise<void> {
    this.stopHearing?.();
    this.listeners.length = 0;
    await this.rotationQueue.catch(() => undefined);
  }

  // --- internals ---

  /** The rotation steps themselves, called only inside `serialized`. */
  private async rotateDueNow(now: Date, schedule: RotationSchedule, kind?: CaKeyKind, changed: KeyStep[] = []): Promise<KeyStep[]> {
    changed.push(...(await this.retireNow(now, kind)));
    for (const k of kind ? [kind] : this.kinds()) {
      const active = this.requireActive(k);
      const start = (active.record.activatedAt ?? active.record.createdAt).getTime();
      const end = active.record.notAfter?.getTime() ?? start;
      const elapsed = end > start ? (now.getTime() - start) / (end - start) : 1;
      if (elapsed >= schedule.prepareAt && !this.key(k, "prepared")) changed.push(await this.prepareNow(k, now));
      if (elapsed >= schedule.activateAt && this.key(k, "prepared")) changed.push(await this.activateNow(k, now));
    }
    return changed;
  }

  private async prepareNow(kind: CaKeyKind, now: Date): Promise<KeyStep> {
    if (this.key(kind, "prepared")) throw new HallmarkError("ca_rotation_in_progress", `a ${kind} key is already prepared; activate it first`);
    const id = randomUUID();
    const label = caKeyLabel(kind, id);
    const keyType = kind === "x509" ? this.o.x509.keyType : kind === "token" ? this.o.token!.keyType : this.o.jwt.keyType; // jwt and wit alike
    // The intent is recorded before the HSM generates anything: whatever a crash from here on
    // leaves in the token is named by a pending record, and the next start destroys it.
    const record: CaKeyRecord = { id, kind, label, keyType, status: "pending", createdAt: now };
    await this.o.caKeys.insert(record);
    let signer: Signer;
    try {
      signer = await this.o.keyStore.generate(label, keyType);
      if (kind === "x509") Object.assign(record, await this.newCaCertificate(signer, now));
      else {
        record.kid = createHash("sha256").update(signer.publicKey.export({ type: "spki", format: "der" })).digest("base64url").slice(0, 32);
        const own = kind === "wit" ? this.o.wit?.keyTtlSeconds : kind === "token" ? this.o.token?.keyTtlSeconds : undefined;
        const keyTtl = own ?? this.o.jwt.keyTtlSeconds ?? this.o.x509.ttlSeconds;
        record.notAfter = new Date(now.getTime() + keyTtl * 1000);
      }
      await this.o.caKeys.markPrepared(record);
    } catch (e) {
      await this.abandon(record);
      throw e;
    }
    record.status = "prepared";
    this.loaded.set(id, { record, signer });
    await this.bundleChanged();
    return { step: "prepare", kind, keyId: id };
  }

  /** Undoes a failed creation now rather than at the next start; if this fails too, the next start does it. */
  private async abandon(record: CaKeyRecord): Promise<void> {
    try {
      await this.o.keyStore.destroy(record.label);
      await this.o.caKeys.discardPending(record.id);
    } catch (e) {
      this.o.log.warn({ err: e, label: record.label }, "could not undo a failed CA key creation; the next start will");
    }
  }

  private async activateNow(kind: CaKeyKind, now: Date): Promise<KeyStep> {
    const next = this.key(kind, "prepared");
    if (!next) throw new HallmarkError("ca_rotation_nothing_prepared", `no prepared ${kind} key to activate; prepare one first`);
    const current = this.key(kind, "active");
    if (current) await this.setStatus(current, "previous", now);
    await this.setStatus(next, "active", now);
    await this.bundleChanged();
    return { step: "activate", kind, keyId: next.record.id };
  }

  private async retireNow(now: Date, kind?: CaKeyKind): Promise<KeyStep[]> {
    const changed: KeyStep[] = [];
    for (const k of [...this.loaded.values()].filter((k) => k.record.status === "previous" && (!kind || k.record.kind === kind))) {
      const last = await this.latestExpiry(k.record);
      if (last && last.getTime() > now.getTime()) continue;
      await this.setStatus(k, "retired", now);
      this.loaded.delete(k.record.id);
      await this.o.keyStore.destroy(k.record.label);
      changed.push({ step: "retire", kind: k.record.kind, keyId: k.record.id });
    }
    if (changed.length) await this.bundleChanged();
    return changed;
  }

  private async newCaCertificate(signer: Signer, now: Date): Promise<Pick<CaKeyRecord, "certificate" | "notAfter" | "upstreamChain">> {
    const { trustDomain, x509 } = this.o;
    const upstream = x509.upstream;
    const certificate = upstream
      ? await createIntermediateCa({ signer, upstream: { signer: upstream.signer, certificate: upstream.chain[0]! }, trustDomain, ttlSeconds: x509.ttlSeconds, now })
      : await createRootCa({ signer, trustDomain, ttlSeconds: x509.ttlSeconds, now });
    checkSigningCertConformance(certificate, { trustDomain, issuerCertificate: upstream ? upstream.chain[0] : certificate });
    return { certificate, notAfter: new Date(new X509Certificate(certificate).validTo), upstreamChain: upstream?.chain };
  }

  private async reportAutomatic(trigger: AutomaticCaKeyChange["trigger"], steps: KeyStep[]): Promise<void> {
    for (const s of steps) await this.o.onAutomaticKeyChange?.({ ...s, trigger });
  }

  /**
   * A key step: one at a time in this process, and under the replicas' common lock, on the key
   * records as they are now (read again first, unless `reload` is false: init reads them itself).
   */
  private serialized<T>(step: () => Promise<T>, reload = true): Promise<T> {
    const coordination = this.o.coordination;
    if (!coordination) return this.local(step);
    return this.local(() =>
      coordination.exclusively(ROTATION_LOCK, async () => {
        if (reload) await this.reloadKeys();
        return step();
      }),
    );
  }

  /** One at a time in this process: two concurrent prepares must not both create a key. */
  private local<T>(step: () => Promise<T>): Promise<T> {
    const run = this.rotationQueue.then(step, step);
    this.rotationQueue = run.catch(() => undefined);
    return run;
  }

  /**
   * Reads the key records again (what another replica prepared, activated or retired), finding
   * new keys in the KeyStore by label; keeps the signers of keys already loaded. The sequence only
   * goes up. Tells the bundle listeners when the published keys changed.
   */
  private async reloadKeys(): Promise<void> {
    const records = (await this.o.caKeys.list()).filter((r) => PUBLISHED.has(r.status));
    const sequence = await this.o.caKeys.bundleSequence();
    const before = [...this.loaded.values()].map((k) => `${k.record.id}:${k.record.status}`).sort().join();
    const next = new Map<string, LoadedKey>();
    for (const record of records) {
      const signer = this.loaded.get(record.id)?.signer ?? (await this.o.keyStore.find(record.label, { recorded: true }));
      if (!signer) throw new HallmarkError("hsm_key_not_found", `the ${record.kind} key '${record.label}' is recorded but not in the KeyStore`);
      next.set(record.id, { record, signer });
    }
    this.loaded.clear();
    for (const [id, k] of next) this.loaded.set(id, k);
    this.sequence = Math.max(this.sequence, sequence);
    const after = records.map((r) => `${r.id}:${r.status}`).sort().join();
    if (after !== before) for (const l of this.listeners) l();
  }

  private member(id: SpiffeId): SpiffeId {
    if (!id.memberOf(this.o.trustDomain)) throw new HallmarkError("spiffe_id_outside_trust_domain", `${id} is not a workload or node ID of ${this.o.trustDomain.name}`);
    return id;
  }

  private key(kind: CaKeyKind, status: CaKeyStatus): LoadedKey | undefined {
    return [...this.loaded.values()].find((k) => k.record.kind === kind && k.record.status === status);
  }

  private requireActive(kind: CaKeyKind): LoadedKey {
    const k = this.key(kind, "active");
    if (!k) throw new HallmarkError("ca_not_ready", `no active ${kind} key`);
    return k;
  }

  /** Oldest first: the bundle reads the same before and after a restart. */
  private published(kind: CaKeyKind): LoadedKey[] {
    return [...this.loaded.values()].filter((k) => k.record.kind === kind && PUBLISHED.has(k.record.status)).sort(byAge);
  }

  /** The kinds of key this CA keeps: the WIT key only when WIT-SVIDs are configured, the token key only when access tokens are. */
  private kinds(): readonly CaKeyKind[] {
    return ALL_KINDS.filter((k) => (k === "wit" ? this.o.wit : k === "token" ? this.o.token : true));
  }

  /** When the last credential a key signed expires: SVIDs for the SVID keys, access tokens for the token key. */
  private latestExpiry(record: CaKeyRecord): Promise<Date | undefined> {
    return record.kind === "token" && this.o.token ? this.o.token.latestExpiry(record.id) : this.o.svids.latestExpiry(record.id);
  }

  /** The published JWT-SVID, WIT-SVID or access-token keys. */
  private jwsAuthorities(kind: "jwt" | "wit" | "token"): JwtAuthority[] {
    return this.published(kind).map((k) => ({ kid: k.record.kid!, publicKey: k.signer.publicKey, alg: SCHEMES[this.jwtScheme(k)].jwsAlg }));
  }

  private jwtScheme(k: LoadedKey) {
    return jwtSchemeFor(k.signer.keyType, this.o.jwt.rsaPadding);
  }

  /** What follows the leaf: in intermediate mode our CA certificate, then the upstream chain without its root. */
  private intermediates(record: CaKeyRecord): Buffer[] {
    if (!record.upstreamChain) return [];
    return [record.certificate!, ...record.upstreamChain.slice(0, -1)];
  }

  private async setStatus(k: LoadedKey, status: CaKeyStatus, at: Date): Promise<void> {
    await this.o.caKeys.setStatus(k.record.id, status, at);
    k.record.status = status;
    if (status === "active") k.record.activatedAt = at;
    if (status === "retired") k.record.retiredAt = at;
  }

  private async bundleChanged(): Promise<void> {
    this.sequence = Math.max(this.sequence, await this.o.caKeys.bumpBundleSequence());
    for (const l of this.listeners) l();
  }
}

/** Within one creation instant, a previous key is older than the active one, which is older than a prepared one. */
const LIFECYCLE: Record<CaKeyStatus, number> = { retired: 0, previous: 1, active: 2, prepared: 3, pending: 4 };

function byAge(a: LoadedKey, b: LoadedKey): number {
  return (
    a.record.createdAt.getTime() - b.record.createdAt.getTime() ||
    LIFECYCLE[a.record.status] - LIFECYCLE[b.record.status] ||
    (a.record.id < b.record.id ? -1 : a.record.id > b.record.id ? 1 : 0)
  );
}

function sameKey(signer: Signer, certificate: Buffer | undefined): boolean {
  if (!certificate) return false;
  try {
    return new X509Certificate(certificate).publicKey.equals(signer.publicKey);
  } catch {
    return false;
  }
}
