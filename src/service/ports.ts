import type { AuditCheckpoint, AuditVerification } from "../audit/log.js";
import type { SpiffeId } from "../spiffe/id.js";
import type { DelegationRecord, IssuedSvidRecord } from "../store/types.js";

/**
 * What the services need from the certificate authority. src/issuer's CertificateAuthority is
 * adapted to this in src/service/ca-adapter.ts so the services stay small and testable.
 */
/**
 * What the store keeps of a signed SVID. The issuer signs but does not write it: the caller
 * commits it with the issuance's audit record (AuditLog.append(input, svidRecord)), in one
 * transaction (which group commit may share with other records), before the SVID leaves the server.
 */
export interface Recordable {
  svidRecord: IssuedSvidRecord;
}

export interface IssuedX509 extends Recordable {
  /** Leaf first, then intermediates up to (not including) the root. */
  chain: Buffer[];
  serial: string;
  notAfter: Date;
}

export interface IssuedJwt extends Recordable {
  token: string;
  expiresAt: Date;
}

export interface IssuedWit extends Recordable {
  token: string;
  expiresAt: Date;
  /** The token's `jti`: names it in the audit record. */
  jti: string;
}

/** What a WIT-SVID is issued for: the workload's public key, a JWK checked by the issuer (src/issuer/wit-svid.ts). */
export interface WitIssueRequest {
  spiffeId: SpiffeId;
  publicKeyJwk: unknown;
  ttlSeconds: number;
  nodeId?: string;
  now: Date;
}

/** What an X.509-SVID is issued for. */
export interface X509IssueRequest {
  spki: Buffer;
  spiffeId: SpiffeId;
  ttlSeconds: number;
  dnsNames?: string[];
  /** iPAddress SANs (IPv4 or IPv6 text), beside the one URI SAN (X509-SVID §2 allows them). */
  ipAddresses?: string[];
  nodeId?: string;
  now: Date;
}

export interface SvidIssuer {
  issueX509(input: X509IssueRequest): Promise<IssuedX509>;
  /** `issuer`: the `iss` claim (the OIDC discovery issuer). */
  issueJwt(input: { spiffeId: SpiffeId; audience: string[]; ttlSeconds: number; issuer?: string; nodeId?: string; now: Date }): Promise<IssuedJwt>;
  issueWit(input: WitIssueRequest): Promise<IssuedWit>;
  /** Root and CA certificates relying parties trust (current, next and previous keys). */
  x509Authorities(): Promise<Buffer[]>;
}

/**
 * The X509-SVID a caller presented over mutual TLS (its chain already verified by the TLS layer
 * against the bundle at handshake time): what request-time checks need from it.
 */
export interface PresentedSvid {
  spiffeId: string;
  /** Lowercase hex without leading zeros, as `normalizeSerial` makes it. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/** One spelling of a certificate serial in hex, whichever tool printed it. */
export function normalizeSerial(hex: string): string {
  return hex.toLowerCase().replace(/^0+(?=.)/, "");
}

/** A parsed, verified CSR (proof of possession checked). */
export interface VerifiedCsr {
  spki: Buffer;
  uriSans: string[];
  dnsSans: string[];
}

export type CsrParser = (input: string) => VerifiedCsr;

/** The CA's keys: x509 (the CA), jwt (JWT-SVIDs), wit (WIT-SVIDs), token (OAuth access tokens). */
export type CaKeyKindName = "x509" | "jwt" | "wit" | "token";
export const CA_KEY_KINDS = ["x509", "jwt", "wit", "token"] as const satisfies readonly CaKeyKindName[];

/** An access token signed by the HSM key: `kid` names it in the JWKS, `keyId` in the CA's key records. */
export interface SignedAccessToken {
  token: string;
  kid: string;
  keyId: string;
  expiresAt: Date;
}

/** What the OAuth services need from the CA: the access-token key, in the KeyStore. */
export interface AccessTokenSigner {
  /** Signs RFC 9068 claims (header typ at+jwt, alg, kid) with the active token key. */
  signAccessToken(claims: { exp: number } & Record<string, unknown>): Promise<SignedAccessToken>;
  /** The token keys a resource server verifies with (prepared, active, previous): a plain JWKS. */
  accessTokenJwks(): Promise<Record<string, unknown>>;
  /** Plain JWKS of the JWT-SVID keys: client assertions and actor tokens verify with it. */
  jwtJwks(): Promise<Record<string, unknown>>;
}

/**
 * Whether a delegation still exists: every link of an access token's lineage needs its own.
 * Backed by the delegations repository (store.delegations).
 */
export interface DelegationLookup {
  exists(id: string): Promise<boolean>;
  /** The delegations that could let `actor` act for `subject` of `subjectIssuer` (token exchange's candidates). */
  candidatesFor(actor: string, subjectIssuer: string, subject: string): Promise<DelegationRecord[]>;
}

export type RotationStep = "prepare" | "activate" | "retire" | "auto";

/**
 * A CA key step the CA took without an administrator asking (the first keys at start, a
 * scheduled rotation step), reported so the service layer can audit it as it audits the
 * administrator's `ca rotate`. Awaited: a step that cannot be audited fails the start.
 */
export interface AutomaticCaKeyChange {
  kind: CaKeyKindName;
  step: "prepare" | "activate" | "retire";
  keyId: string;
  trigger: "start" | "schedule";
}

/** What administration needs from the CA: the bundle in its forms, and rotation steps. */
export interface CaAdministration {
  bundlePem(): Promise<string>;
  /** The SPIFFE bundle (JWKS with spiffe_sequence and spiffe_refresh_hint). */
  spiffeBundle(): Promise<Record<string, unknown>>;
  /** Plain JWKS of the JWT-SVID keys, for OIDC relying parties. */
  jwtJwks(): Promise<Record<string, unknown>>;
  /** `notes` say why nothing changed, when nothing did (e.g. which key waits for which expiry). */
  rotate(kind: CaKeyKindName, step: RotationStep): Promise<{ changed: string[]; notes?: string[] }>;
  /** Current keys and their states, for `hallmark ca show`-style listings. */
  keys(): Promise<Array<{ id: string; kind: string; status: string; notAfter?: string | undefined; kid?: string | undefined }>>;
}

/** A full walk of the audit chain, kept off the request path (src/audit/worker-verifier.ts). */
export interface AuditChainVerifier {
  verify(checkpoint?: AuditCheckpoint): Promise<AuditVerification>;
}
