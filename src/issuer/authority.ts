import { createHash, createPublicKey, randomUUID, X509Certificate } from "node:crypto";
import type { Logger } from "pino";
import { HallmarkError } from "../errors.js";
import type { KeyStore, KeyType, Signer } from "../hsm/signer.js";
import type { CaAdministration, IssuedJwt, IssuedX509, RotationStep, SvidIssuer } from "../service/ports.js";
import type { Clock } from "../service/clock.js";
import type { SpiffeId, TrustDomain } from "../spiffe/id.js";
import type { CaKeyKind, CaKeyRecord, CaKeyRepository, SvidRepository } from "../store/types.js";
import { type JwtAuthority, bundlePem, jwtJwks, spiffeBundleJwks } from "./bundle.js";
import { createIntermediateCa, createRootCa, issueLeafSvid } from "./certificates.js";
import { checkSigningCertConformance, checkX509SvidConformance } from "./conformance.js";
import { mintJwtSvid } from "./jwt-svid.js";
import { SCHEMES, jwtSchemeFor } from "./signature-formats.js";

export interface UpstreamCa {
  /** The upstream CA certificate first, then its chain up to and including the root. */
  chain: Buffer[];
  signer: Signer;
}

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
  x509: { keyType: KeyType; ttlSeconds: number; upstream?: UpstreamCa | undefined };
  jwt: { keyType: KeyType; rsaPadding?: "pkcs1" | "pss" };
  refreshHintSeconds: number;
  rotation?: RotationSchedule | undefined;
}

interface LoadedKey {
  record: CaKeyRecord;
  signer: Signer;
}

const PUBLISHED = new Set(["prepared", "active", "previous"]);

/**
 * The certificate authority: the X.509 CA key and the JWT-SVID key, both in the HSM, found again
 * by label after a restart; SVID issuance with validation after signing; the bundle; and key
 * rotation (prepare → published; activate → signing, old key kept in the bundle; retire → gone
 * once its last SVID has expired).
 */
export class CertificateAuthority implements SvidIssuer, CaAdministration {
  private loaded = new Map<string, LoadedKey>();
  private readonly listeners: Array<() => void> = [];

  private constructor(private readonly o: AuthorityOptions) {}

  static async open(o: AuthorityOptions): Promise<CertificateAuthority> {
    const ca = new CertificateAuthority(o);
    await ca.load();
    for (const kind of ["x509", "jwt"] as const) {
      if (!ca.key(kind, "active")) {
        await ca.prepare(kind);
        await ca.activate(kind);
        o.log.info({ kind }, "created a new signing key in the HSM");
      }
    }
    return ca;
  }

  // --- SvidIssuer ---

  async issueX509(input: { spki: Buffer; spiffeId: SpiffeId; ttlSeconds: number; dnsNames?: string[]; nodeId?: string; now: Date }): Promise<IssuedX509> {
    const active = this.requireActive("x509");
    const certificate = active.record.certificate!;
    const rsaKey = createPublicKey({ key: input.spki, format: "der", type: "spki" }).asymmetricKeyType === "rsa";
    const leaf = await issueLeafSvid({
      ca: { signer: active.signer, certificate },
      spki: input.spki,
      rsaKey,
      spiffeId: input.spiffeId,
      dnsNames: input.dnsNames,
      ttlSeconds: input.ttlSeconds,
      now: input.now,
    });
    // Validate after signing: a certificate that breaks a SPIFFE MUST is never handed out.
    checkX509SvidConformance(leaf.der, { trustDomain: this.o.trustDomain });
    await this.o.svids.record({
      serial: leaf.serialHex,
      spiffeId: input.spiffeId.toString(),
      kind: "x509",
      nodeId: input.nodeId,
      caKeyId: active.record.id,
      issuedAt: input.now,
      notAfter: leaf.notAfter,
    });
    return { chain: [leaf.der, ...this.intermediates(active.record)], serial: leaf.serialHex, notAfter: leaf.notAfter };
  }

  async issueJwt(input: { spiffeId: SpiffeId; audience: string[]; ttlSeconds: number; nodeId?: string; now: Date }): Promise<IssuedJwt> {
    const active = this.requireActive("jwt");
    const jwt = await mintJwtSvid({
      signer: active.signer,
      scheme: this.jwtScheme(active),
      kid: active.record.kid!,
      spiffeId: input.spiffeId,
      audience: input.audience,
      ttlSeconds: input.ttlSeconds,
      now: input.now,
    });
    await this.o.svids.record({
      serial: `jwt-${randomUUID()}`,
      spiffeId: input.spiffeId.toString(),
      kind: "jwt",
      nodeId: input.nodeId,
      caKeyId: active.record.id,
      issuedAt: input.now,
      notAfter: jwt.expiresAt,
    });
    return jwt;
  }

  /** Trust anchors: our CA certificates (root mode) or the upstream root (intermediate mode). */
  async x509Authorities(): Promise<Buffer[]> {
    if (this.o.x509.upstream) {
      const root = this.o.x509.upstream.chain[this.o.x509.upstream.chain.length - 1];
      return root ? [root] : [];
    }
    return this.published("x509").map((k) => k.record.certificate!);
  }

  // --- CaAdministration ---

  async bundlePem(): Promise<string> {
    return bundlePem(await this.x509Authorities());
  }

  async spiffeBundle(): Promise<Record<string, unknown>> {
    return spiffeBundleJwks({
      x509Authorities: await this.x509Authorities(),
      jwtAuthorities: this.jwtAuthorities(),
      sequence: await this.o.caKeys.bundleSequence(),
      refreshHintSeconds: this.o.refreshHintSeconds,
      publicKeyOf: (der) => new X509Certificate(der).publicKey,
    });
  }

  async jwtJwks(): Promise<Record<string, unknown>> {
    return jwtJwks(this.jwtAuthorities());
  }

  async keys() {
    return [...this.loaded.values()].map((k) => ({
      id: k.record.id,
      kind: k.record.kind,
      status: k.record.status,
      notAfter: k.record.notAfter?.toISOString(),
      kid: k.record.kid,
    }));
  }

  async rotate(kind: CaKeyKind, step: RotationStep): Promise<{ changed: string[] }> {
    switch (step) {
      case "prepare":
        return { changed: [await this.prepare(kind)] };
      case "activate":
        return { changed: [await this.activate(kind)] };
      case "retire":
        return { changed: await this.retireExpired(kind) };
      default:
        return { changed: await this.rotateIfDue(kind) };
    }
  }

  onBundleChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** Runs `auto` rotation for both kinds every checkInterval, when a schedule is configured. */
  startScheduledRotation(): () => void {
    const schedule = this.o.rotation;
    if (!schedule) return () => undefined;
    const timer = setInterval(() => {
      void (async () => {
        for (const kind of ["x509", "jwt"] as const) {
          try {
            const changed = await this.rotateIfDue(kind);
            if (changed.length) this.o.log.info({ kind, changed }, "scheduled rotation");
          } catch (e) {
            this.o.log.error({ err: e, kind }, "scheduled rotation failed");
          }
        }
      })();
    }, schedule.checkIntervalSeconds * 1000);
    timer.unref();
    return () => clearInterval(timer);
  }

  // --- rotation steps ---

  async prepare(kind: CaKeyKind): Promise<string> {
    if (this.key(kind, "prepared")) throw new HallmarkError("ca_rotation_in_progress", `a ${kind} key is already prepared; activate it first`);
    const now = this.o.clock();
    const id = randomUUID();
    const label = `hallmark-${kind}-${id}`;
    const keyType = kind === "x509" ? this.o.x509.keyType : this.o.jwt.keyType;
    const signer = await this.o.keyStore.generate(label, keyType);
    const record: CaKeyRecord = { id, kind, label, keyType, status: "prepared", createdAt: now };
    if (kind === "x509") {
      const upstream = this.o.x509.upstream;
      record.certificate = upstream
        ? await createIntermediateCa({ signer, upstream: { signer: upstream.signer, certificate: upstream.chain[0]! }, trustDomain: this.o.trustDomain, keyId: id.slice(0, 8), ttlSeconds: this.o.x509.ttlSeconds, now })
        : await createRootCa({ signer, trustDomain: this.o.trustDomain, keyId: id.slice(0, 8), ttlSeconds: this.o.x509.ttlSeconds, now });
      checkSigningCertConformance(record.certificate, { trustDomain: this.o.trustDomain });
      record.notAfter = new Date(new X509Certificate(record.certificate).validTo);
      record.upstreamChain = upstream?.chain;
    } else {
      record.kid = createHash("sha256").update(signer.publicKey.export({ type: "spki", format: "der" })).digest("base64url").slice(0, 32);
      record.notAfter = new Date(now.getTime() + this.o.x509.ttlSeconds * 1000);
    }
    await this.o.caKeys.insert(record);
    this.loaded.set(id, { record, signer });
    await this.bundleChanged();
    return `prepared ${kind} key ${id}`;
  }

  async activate(kind: CaKeyKind): Promise<string> {
    const next = this.key(kind, "prepared");
    if (!next) throw new HallmarkError("ca_rotation_nothing_prepared", `no prepared ${kind} key to activate; prepare one first`);
    const now = this.o.clock();
    const current = this.key(kind, "active");
    if (current) await this.setStatus(current, "previous", now);
    await this.setStatus(next, "active", now);
    await this.bundleChanged();
    return `activated ${kind} key ${next.record.id}`;
  }

  /** Previous keys whose last SVID has expired leave the bundle and are destroyed in the HSM. */
  async retireExpired(kind: CaKeyKind): Promise<string[]> {
    const now = this.o.clock();
    const changed: string[] = [];
    for (const k of [...this.loaded.values()].filter((k) => k.record.kind === kind && k.record.status === "previous")) {
      const last = await this.o.svids.latestExpiry(k.record.id);
      if (last && last.getTime() > now.getTime()) continue;
      await this.setStatus(k, "retired", now);
      await this.o.keyStore.destroy(k.record.label);
      this.loaded.delete(k.record.id);
      changed.push(`retired ${kind} key ${k.record.id}`);
    }
    if (changed.length) await this.bundleChanged();
    return changed;
  }

  /** The next step the schedule calls for, if any: retire, prepare at prepareAt, activate at activateAt. */
  async rotateIfDue(kind: CaKeyKind): Promise<string[]> {
    const changed = await this.retireExpired(kind);
    const schedule = this.o.rotation ?? { prepareAt: 0.5, activateAt: 0.75 };
    const active = this.requireActive(kind);
    const start = (active.record.activatedAt ?? active.record.createdAt).getTime();
    const end = active.record.notAfter?.getTime() ?? start;
    const elapsed = end > start ? (this.o.clock().getTime() - start) / (end - start) : 1;
    if (elapsed >= schedule.prepareAt && !this.key(kind, "prepared")) changed.push(await this.prepare(kind));
    if (elapsed >= schedule.activateAt && this.key(kind, "prepared")) changed.push(await this.activate(kind));
    return changed;
  }

  async close(): Promise<void> {
    this.listeners.length = 0;
  }

  // --- internals ---

  private async load(): Promise<void> {
    for (const record of await this.o.caKeys.list()) {
      if (!PUBLISHED.has(record.status)) continue;
      const signer = await this.o.keyStore.find(record.label);
      if (!signer) throw new HallmarkError("hsm_key_not_found", `the ${record.kind} key '${record.label}' is recorded but not in the HSM token`);
      this.loaded.set(record.id, { record, signer });
    }
  }

  private key(kind: CaKeyKind, status: CaKeyRecord["status"]): LoadedKey | undefined {
    return [...this.loaded.values()].find((k) => k.record.kind === kind && k.record.status === status);
  }

  private requireActive(kind: CaKeyKind): LoadedKey {
    const k = this.key(kind, "active");
    if (!k) throw new HallmarkError("ca_not_ready", `no active ${kind} key`);
    return k;
  }

  private published(kind: CaKeyKind): LoadedKey[] {
    return [...this.loaded.values()].filter((k) => k.record.kind === kind && PUBLISHED.has(k.record.status));
  }

  private jwtAuthorities(): JwtAuthority[] {
    return this.published("jwt").map((k) => ({ kid: k.record.kid!, publicKey: k.signer.publicKey, alg: SCHEMES[this.jwtScheme(k)].jwsAlg }));
  }

  private jwtScheme(k: LoadedKey) {
    return jwtSchemeFor(k.signer.keyType, this.o.jwt.rsaPadding);
  }

  /** Intermediate mode: our CA certificate, then the upstream chain without its root. */
  private intermediates(record: CaKeyRecord): Buffer[] {
    if (!record.upstreamChain) return [];
    return [record.certificate!, ...record.upstreamChain.slice(0, -1)];
  }

  private async setStatus(k: LoadedKey, status: CaKeyRecord["status"], at: Date): Promise<void> {
    await this.o.caKeys.setStatus(k.record.id, status, at);
    k.record.status = status;
    if (status === "active") k.record.activatedAt = at;
  }

  private async bundleChanged(): Promise<void> {
    await this.o.caKeys.bumpBundleSequence();
    for (const l of this.listeners) l();
  }
}
