import type { AuditCheckpoint, AuditVerification } from "../audit/log.js";
import type { SpiffeId } from "../spiffe/id.js";

/**
 * What the services need from the certificate authority. src/issuer's CertificateAuthority is
 * adapted to this in src/service/ca-adapter.ts so the services stay small and testable.
 */
export interface IssuedX509 {
  /** Leaf first, then intermediates up to (not including) the root. */
  chain: Buffer[];
  serial: string;
  notAfter: Date;
}

export interface IssuedJwt {
  token: string;
  expiresAt: Date;
}

export interface SvidIssuer {
  issueX509(input: {
    spki: Buffer;
    spiffeId: SpiffeId;
    ttlSeconds: number;
    dnsNames?: string[];
    nodeId?: string;
    now: Date;
  }): Promise<IssuedX509>;
  issueJwt(input: { spiffeId: SpiffeId; audience: string[]; ttlSeconds: number; nodeId?: string; now: Date }): Promise<IssuedJwt>;
  /** Root and CA certificates relying parties trust (current, next and previous keys). */
  x509Authorities(): Promise<Buffer[]>;
}

/** A parsed, verified CSR (proof of possession checked). */
export interface VerifiedCsr {
  spki: Buffer;
  uriSans: string[];
  dnsSans: string[];
}

export type CsrParser = (input: string) => VerifiedCsr;

export type RotationStep = "prepare" | "activate" | "retire" | "auto";

/** What administration needs from the CA: the bundle in its forms, and rotation steps. */
export interface CaAdministration {
  bundlePem(): Promise<string>;
  /** The SPIFFE bundle (JWKS with spiffe_sequence and spiffe_refresh_hint). */
  spiffeBundle(): Promise<Record<string, unknown>>;
  /** Plain JWKS of the JWT-SVID keys, for OIDC relying parties. */
  jwtJwks(): Promise<Record<string, unknown>>;
  rotate(kind: "x509" | "jwt", step: RotationStep): Promise<{ changed: string[] }>;
  /** Current keys and their states, for `hallmark ca show`-style listings. */
  keys(): Promise<Array<{ id: string; kind: string; status: string; notAfter?: string | undefined; kid?: string | undefined }>>;
}

/** A full walk of the audit chain, kept off the request path (src/audit/worker-verifier.ts). */
export interface AuditChainVerifier {
  verify(checkpoint?: AuditCheckpoint): Promise<AuditVerification>;
}
