import type { SpiffeId, TrustDomain } from "../spiffe/id.js";

/**
 * The attestor seam. An attestor turns one kind of evidence (join token, TPM 2.0, AWS Nitro,
 * AMD SEV-SNP) into a verified node identity. The host (src/api via src/attestation) owns the
 * session: it issues the single-use nonce, stores round state, consumes the nonce exactly once,
 * prefixes selectors with the attestor's type (so no attestor can forge another's selectors),
 * checks the agent ID is in the trust domain, refuses a node whose hardware changed, writes the
 * audit record, and only then signs. Attestors know nothing of HTTP, SQL or PKCS#11.
 */

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/** What the host tells an attestor about the session the evidence must be bound to. */
export interface AttestationContext {
  readonly trustDomain: TrustDomain;
  readonly sessionId: string;
  /** Server-issued, random, single use; the evidence must commit to it. */
  readonly nonce: Uint8Array;
  /** DER SubjectPublicKeyInfo of the key the SVID will certify (from the CSR). */
  readonly boundKeySpki: Uint8Array;
  /** Verification time. Injected, never read from the wall clock inside verification. */
  readonly now: Date;
}

export interface AttestationResult {
  /** The node's SPIFFE ID; the host checks it belongs to the trust domain. */
  readonly agentId: SpiffeId;
  /** Selector values without the attestor prefix, e.g. "pcr:sha256:7:ab12…". */
  readonly selectors: readonly string[];
  /**
   * A stable identifier of the hardware (EK public key hash, SNP chip_id, Nitro module…).
   * A node that comes back under the same agent ID with a different one is refused.
   */
  readonly hardwareId?: string;
  /** May the node attest again with fresh evidence (hardware attestors) or not (join tokens). */
  readonly canReattest: boolean;
  /** For the audit record: what was checked (policy name, root fingerprint, measurements…). No secrets. */
  readonly claims: Readonly<Record<string, string | number | boolean>>;
}

export type AttestationStep =
  /** Another round: `challenge` goes to the caller, `state` stays on the server (JSON, stored). */
  | { readonly kind: "challenge"; readonly challenge: JsonObject; readonly state: JsonObject }
  | { readonly kind: "attested"; readonly result: AttestationResult };

export interface Attestor {
  /** Selector prefix and wire name: "join_token", "tpm", "aws_nitro", "amd_sev_snp". */
  readonly type: string;
  /**
   * First round: validate and verify `evidence` (untrusted JSON: validate every field), bound to
   * `ctx.nonce` and `ctx.boundKeySpki`, and check measurement policy. Refusals throw
   * HallmarkError with the attestor's own stable code.
   */
  attest(evidence: unknown, ctx: AttestationContext): Promise<AttestationStep>;
  /** Later rounds: the caller's `response` to the last challenge, with the state kept for it. */
  answer?(state: JsonObject, response: unknown, ctx: AttestationContext): Promise<AttestationStep>;
}

/**
 * The client side of one attestor: runs on the node (or in the enclave, or in CI) and produces
 * evidence bound to the server's nonce and the key it wants certified.
 */
export interface EvidenceProducer {
  readonly type: string;
  /**
   * A key the producer holds itself (a TPM-resident key) and its CSR; without it the client makes
   * a software key. `keyFiles` are written beside the SVID instead of svid.key (e.g. a TPM key blob).
   */
  key?(): Promise<{ csrPem: string; spki: Buffer; keyFiles: Record<string, string> }>;
  evidence(binding: { nonce: Uint8Array; spki: Uint8Array }): Promise<JsonObject>;
  answer?(challenge: JsonObject): Promise<JsonObject>;
  close?(): Promise<void>;
}
