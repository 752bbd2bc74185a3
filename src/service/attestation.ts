import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { AuditLog } from "../audit/log.js";
import { logIndexOf } from "./logged.js";
import type { AttestationContext, AttestationResult, AttestationStep, Attestor, JsonObject } from "../attestors/types.js";
import { HallmarkError, isHallmarkError } from "../errors.js";
import { SpiffeId, type TrustDomain } from "../spiffe/id.js";
import type { AttestationSessionRecord, ConsumeOutcome, Store } from "../store/types.js";
import { AUDIT_EVENTS } from "./audit-events.js";
import { supersede } from "./node-svid.js";
import type { Clock } from "./clock.js";
import type { Metrics } from "./metrics.js";
import type { CsrParser, IssuedX509, SvidIssuer, VerifiedCsr } from "./ports.js";

export interface AttestationServiceDeps {
  trustDomain: TrustDomain;
  store: Store;
  audit: AuditLog;
  issuer: SvidIssuer;
  parseCsr: CsrParser;
  attestors: ReadonlyMap<string, Attestor>;
  clock: Clock;
  sessionTtlSeconds: number;
  nodeTtlSeconds: number;
  /** How long a re-attested node's previous SVID keeps working (see NodeIssuanceDeps). */
  renewalOverlapSeconds: number;
  metrics: Metrics;
}

export interface OpenedSession {
  sessionId: string;
  nonce: Buffer;
  expiresAt: Date;
}

export type AttestationOutcome =
  | { status: "challenge"; challenge: JsonObject }
  | { status: "issued"; spiffeId: string; svid: IssuedX509; selectors: string[]; logIndex: number };

const NONCE_BYTES = 32;

/**
 * The attestation host: sessions and nonces, the attestor rounds, the node checks that apply to
 * every attestor, issuance of the node SVID, and an audit record for every outcome.
 */
export class AttestationService {
  constructor(private readonly deps: AttestationServiceDeps) {}

  async openSession(attestorType: string): Promise<OpenedSession> {
    this.attestor(attestorType);
    const now = this.deps.clock();
    const session: AttestationSessionRecord = {
      id: randomUUID(),
      attestorType,
      nonce: randomBytes(NONCE_BYTES),
      status: "open",
      expiresAt: new Date(now.getTime() + this.deps.sessionTtlSeconds * 1000),
      createdAt: now,
    };
    await this.deps.store.sessions.create(session);
    return { sessionId: session.id, nonce: session.nonce, expiresAt: session.expiresAt };
  }

  /** Evidence round: `csr` names the key the evidence must be bound to. */
  async submitEvidence(sessionId: string, input: { csr: string; evidence: unknown }, actor: string): Promise<AttestationOutcome> {
    let attestorType: string | undefined;
    return this.audited(actor, () => attestorType, async () => {
      const session = await this.session(sessionId);
      attestorType = session.attestorType;
      const attestor = this.attestor(session.attestorType);
      const csr = this.deps.parseCsr(input.csr);
      const spki = csr.spki;
      const now = this.deps.clock();
      // Claim the session before verifying: the nonce is spent even if the evidence fails.
      sessionOutcome(await this.deps.store.sessions.transition(session.id, "open", "done", now, { boundSpki: spki }));
      const step = await attestor.attest(input.evidence, this.context(session, spki, now));
      return this.afterStep(session, attestor, step, csr, now);
    });
  }

  /** Later rounds (e.g. TPM credential activation). */
  async answer(sessionId: string, response: unknown, actor: string): Promise<AttestationOutcome> {
    let attestorType: string | undefined;
    return this.audited(actor, () => attestorType, async () => {
      const session = await this.session(sessionId);
      attestorType = session.attestorType;
      const attestor = this.attestor(session.attestorType);
      if (!attestor.answer || session.status !== "challenged" || !session.state || !session.boundSpki) {
        throw new HallmarkError("session_wrong_round", "this session is not waiting for an answer");
      }
      const now = this.deps.clock();
      const state = session.state;
      sessionOutcome(await this.deps.store.sessions.transition(session.id, "challenged", "done", now, { state: undefined }));
      const step = await attestor.answer(state.attestor as JsonObject, response, this.context(session, session.boundSpki, now));
      const csr: VerifiedCsr = {
        spki: session.boundSpki,
        uriSans: (state.csrUriSans as string[] | undefined) ?? [],
        dnsSans: [],
      };
      return this.afterStep(session, attestor, step, csr, now);
    });
  }

  private async afterStep(
    session: AttestationSessionRecord,
    attestor: Attestor,
    step: AttestationStep,
    csr: VerifiedCsr,
    now: Date,
  ): Promise<AttestationOutcome> {
    if (step.kind === "challenge") {
      const state: JsonObject = { attestor: step.state, csrUriSans: csr.uriSans };
      sessionOutcome(await this.deps.store.sessions.transition(session.id, "done", "challenged", now, { state }));
      return { status: "challenge", challenge: step.challenge };
    }
    return this.admit(attestor.type, step.result, csr, now);
  }

  /** Checks that hold for every attestor, then the node SVID. */
  private async admit(attestorType: string, result: AttestationResult, csr: VerifiedCsr, now: Date): Promise<AttestationOutcome> {
    const agentId = result.agentId;
    if (!agentId.memberOf(this.deps.trustDomain)) {
      throw new HallmarkError("spiffe_id_outside_trust_domain", `${agentId} is not in trust domain ${this.deps.trustDomain}`);
    }
    checkCsrSans(csr, agentId);
    const existing = await this.deps.store.nodes.get(agentId.toString());
    if (existing && (existing.attestorType !== attestorType || existing.hardwareId !== result.hardwareId)) {
      throw new HallmarkError(
        "hardware_identity_changed",
        `${agentId} attested before with different hardware`,
        { internal: `was ${existing.attestorType}/${existing.hardwareId ?? "-"}, now ${attestorType}/${result.hardwareId ?? "-"}` },
      );
    }
    const ban = await this.deps.store.nodes.findBan(agentId.toString(), attestorType, result.hardwareId);
    if (ban) {
      throw new HallmarkError("node_banned", `${agentId} is banned from attesting until an administrator lifts the ban`, {
        internal: `ban on ${ban.spiffeId} (${ban.attestorType}/${ban.hardwareId ?? "-"}) since ${ban.createdAt.toISOString()}`,
      });
    }
    const selectors = result.selectors.map((s) => `${attestorType}:${s}`);
    const svid = await this.deps.issuer.issueX509({ spki: csr.spki, spiffeId: agentId, ttlSeconds: this.deps.nodeTtlSeconds, now });
    await this.deps.store.nodes.upsert({
      spiffeId: agentId.toString(),
      attestorType,
      hardwareId: result.hardwareId,
      selectors,
      canReattest: result.canReattest,
      ...supersede(existing, svid, now, this.deps.renewalOverlapSeconds),
      evicted: false,
      evictedAt: existing?.evictedAt,
      createdAt: existing?.createdAt ?? now,
      updatedAt: now,
    });
    const record = await this.deps.audit.append({
      time: now,
      event: AUDIT_EVENTS.attest,
      outcome: "success",
      spiffeId: agentId.toString(),
      attestor: attestorType,
      serial: svid.serial,
      details: { selectors, claims: result.claims, hardwareId: result.hardwareId ?? null, spkiSha256: sha256Hex(csr.spki) },
    }, svid.svidRecord);
    this.deps.metrics.attestation(attestorType, "success");
    return { status: "issued", spiffeId: agentId.toString(), svid, selectors, logIndex: logIndexOf(record) };
  }

  /** Runs `work`; a refusal is audited with its code and counted before it propagates. */
  private async audited<T>(actor: string, attestorType: () => string | undefined, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (e) {
      const code = isHallmarkError(e) ? e.code : "internal";
      const type = attestorType() ?? "unknown";
      await this.deps.audit.append({
        time: this.deps.clock(),
        event: AUDIT_EVENTS.attest,
        outcome: isHallmarkError(e) ? "refused" : "error",
        code,
        actor,
        attestor: type,
        details: { reason: isHallmarkError(e) ? e.message : "internal error", internal: isHallmarkError(e) ? e.internal ?? null : null },
      });
      this.deps.metrics.attestation(type, code);
      throw e;
    }
  }

  private attestor(type: string): Attestor {
    const a = this.deps.attestors.get(type);
    if (!a) throw new HallmarkError("unknown_attestor", `attestor '${type}' is not enabled on this server`);
    return a;
  }

  private async session(id: string): Promise<AttestationSessionRecord> {
    const s = await this.deps.store.sessions.get(id);
    if (!s) throw new HallmarkError("session_not_found", "no such attestation session");
    return s;
  }

  private context(session: AttestationSessionRecord, spki: Buffer, now: Date): AttestationContext {
    return { trustDomain: this.deps.trustDomain, sessionId: session.id, nonce: session.nonce, boundKeySpki: spki, now };
  }
}

function sessionOutcome(outcome: ConsumeOutcome): void {
  if (outcome === "consumed") return;
  if (outcome === "expired") throw new HallmarkError("session_expired", "the attestation session has expired");
  if (outcome === "used") throw new HallmarkError("session_used", "the attestation session was already used");
  throw new HallmarkError("session_not_found", "no such attestation session");
}

/** A CSR may name the identity it expects; it must then be exactly the one being issued. */
export function checkCsrSans(csr: VerifiedCsr, id: SpiffeId): void {
  for (const uri of csr.uriSans) {
    let asked: SpiffeId;
    try {
      asked = SpiffeId.parse(uri);
    } catch {
      throw new HallmarkError("csr_san_not_allowed", "the CSR names a URI that is not a SPIFFE ID");
    }
    if (!asked.equals(id)) throw new HallmarkError("csr_san_not_allowed", `the CSR asks for ${asked}, not ${id}`);
  }
}

export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
