import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from "jose";
import { HallmarkError, isHallmarkError } from "../errors.js";
import { type PresentedSvid, normalizeSerial } from "../service/ports.js";
import { SpiffeId, type TrustDomain } from "../spiffe/id.js";
import type { IssuedSvidRecord, NodeRecord, Store } from "../store/types.js";
import { oauthError } from "./errors.js";

/**
 * OAuth client authentication of workloads by their SVIDs (draft-ietf-oauth-spiffe-client-auth):
 * mutual TLS with the X509-SVID (RFC 8705 tls_client_auth; the draft's spiffe_x509), or a
 * JWT-SVID as client assertion (client_assertion_type ...:jwt-spiffe; the draft's spiffe_jwt).
 * Beyond the signature, each SVID must be one Hallmark issued to a workload (its issuance record),
 * unexpired, and the node it was issued to must not be evicted: evicting a node cuts off its
 * workloads' OAuth access at once. The result names that node and how it was attested.
 */

export const JWT_SPIFFE_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";
/** token_endpoint_auth_methods_supported values (RFC 8705 §2.1.1; the SPIFFE draft §4). */
export const CLIENT_AUTH_METHODS = ["tls_client_auth", "spiffe_x509", "spiffe_jwt"] as const;
/** JWS algorithms a JWT-SVID may use (JWT-SVID §3: asymmetric only; never none or HMAC). */
export const JWT_SVID_ALGORITHMS = ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
/** A JWT-SVID is a few hundred bytes; anything far larger is refused before it is parsed. */
const MAX_ASSERTION_CHARS = 8192;

export interface AuthenticatedClient {
  /** The client's SPIFFE ID: the OAuth client_id. */
  clientId: string;
  /** The node (SPIFFE ID) the SVID was issued to. */
  nodeId: string;
  /** The node's attestor type. */
  attestor: string;
  /** TPM nodes: whether the node key was proven TPM-resident (selector tpm:key_resident:true). */
  keyResident?: boolean | undefined;
  method: "tls_client_auth" | "spiffe_jwt";
}

/** What the request carried: the verified TLS client certificate, if any, and the form parameters. */
export interface ClientCredentials {
  /** Undefined when no certificate was presented; a thunk, since reading it may refuse (client_cert_invalid). */
  presented?: (() => PresentedSvid) | undefined;
  clientId?: string | undefined;
  assertionType?: string | undefined;
  assertion?: string | undefined;
  /**
   * Called when these credentials are refused, before the refusal is audited: throws rate_limited
   * once the caller (its address) has spent its allowance of refusals, so that callers who
   * authenticate as nobody cannot grow the audit log at their own pace. A refusal it stops is
   * counted in the limiter's summary record instead (src/service/rate-limit.ts).
   */
  admitRefusal?: (() => void) | undefined;
  /**
   * Called once the client has authenticated, with its client_id: throws rate_limited once that
   * client has spent its allowance of requests (limits.clientRate), before anything else is done.
   */
  admitClient?: ((clientId: string) => void) | undefined;
}

export interface ClientAuthenticatorDeps {
  trustDomain: TrustDomain;
  store: Pick<Store, "svids" | "nodes">;
  /** The JWT-SVID keys as a plain JWKS. */
  jwtJwks: () => Promise<Record<string, unknown>>;
  /** What a client assertion's `aud` may name: our issuer and our endpoint URLs. */
  audiences: () => readonly string[];
}

const NO_CREDENTIAL = "authenticate with a workload X509-SVID over mutual TLS or a JWT-SVID client assertion";
const refuse = (why: string) => oauthError("oauth_client_unauthenticated", why);

export class ClientAuthenticator {
  constructor(private readonly d: ClientAuthenticatorDeps) {}

  /**
   * One method per request (RFC 6749 §2.3): a client assertion when one is sent, else the TLS
   * client certificate. Every failure is oauth_client_unauthenticated, saying which check failed.
   */
  async authenticate(c: ClientCredentials, now: Date): Promise<AuthenticatedClient> {
    let client: AuthenticatedClient;
    try {
      client = await this.authenticateOnce(c, now);
    } catch (e) {
      if (isHallmarkError(e) && e.code === "oauth_client_unauthenticated") c.admitRefusal?.();
      throw e;
    }
    c.admitClient?.(client.clientId);
    return client;
  }

  private async authenticateOnce(c: ClientCredentials, now: Date): Promise<AuthenticatedClient> {
    try {
      if (c.assertionType !== undefined || c.assertion !== undefined) return await this.byAssertion(c, now);
      if (c.presented) return await this.byCertificate(c.presented(), c.clientId, now);
    } catch (e) {
      if (isHallmarkError(e) && e.code === "oauth_client_unauthenticated") throw e;
      if (isHallmarkError(e) && e.code === "client_cert_invalid") throw refuse(e.message);
      if (isHallmarkError(e) && e.code === "client_cert_required") throw refuse(NO_CREDENTIAL);
      throw e;
    }
    throw refuse(NO_CREDENTIAL);
  }

  private async byCertificate(p: PresentedSvid, clientId: string | undefined, now: Date): Promise<AuthenticatedClient> {
    const id = this.member(p.spiffeId);
    if (clientId !== undefined && clientId !== p.spiffeId) throw refuse("client_id is not the SPIFFE ID of the client certificate");
    if (p.notAfter.getTime() <= now.getTime() || p.notBefore.getTime() > now.getTime()) throw refuse("the client certificate is expired or not yet valid");
    const record = await this.d.store.svids.get(normalizeSerial(p.serial));
    const node = await this.issuedToWorkload(record, id, "x509", now);
    return this.result(id, node, "tls_client_auth");
  }

  private async byAssertion(c: ClientCredentials, now: Date): Promise<AuthenticatedClient> {
    if (c.assertionType !== JWT_SPIFFE_ASSERTION_TYPE) throw refuse(`client_assertion_type must be ${JWT_SPIFFE_ASSERTION_TYPE}`);
    const jwt = c.assertion;
    if (!jwt || jwt.length > MAX_ASSERTION_CHARS) throw refuse("client_assertion must be one JWT-SVID");
    let payload: Record<string, unknown>;
    try {
      // The header's alg is checked against the allow-list before any key is chosen: none and HS* never verify.
      const { alg } = decodeProtectedHeader(jwt);
      if (typeof alg !== "string" || !JWT_SVID_ALGORITHMS.includes(alg)) throw new Error(`alg ${String(alg)} is not allowed`);
      const jwks = createLocalJWKSet((await this.d.jwtJwks()) as unknown as JSONWebKeySet);
      ({ payload } = await jwtVerify(jwt, jwks, { algorithms: JWT_SVID_ALGORITHMS, currentDate: now, requiredClaims: ["sub", "aud", "exp"] }));
    } catch (e) {
      throw refuse(`the client assertion is not a valid JWT-SVID of this trust domain (${(e as Error).message})`);
    }
    // RFC 7523bis, which the SPIFFE draft follows: the assertion is for this server and nothing
    // else, so that one presented elsewhere cannot be replayed here (and ours cannot be replayed there).
    const aud = [payload.aud].flat();
    const ours = new Set(this.d.audiences());
    if (aud.length === 0 || !aud.every((a) => typeof a === "string" && ours.has(a))) {
      throw refuse("the client assertion's aud must name this authorization server (its issuer or endpoint) and nothing else");
    }
    const sub = String(payload.sub);
    const id = this.member(sub);
    if (c.clientId !== undefined && c.clientId !== sub) throw refuse("client_id is not the client assertion's sub");
    if (typeof payload.jti !== "string") throw refuse("the client assertion has no jti: it is not a JWT-SVID this server issued");
    const record = await this.d.store.svids.get(`jwt-${payload.jti}`);
    const node = await this.issuedToWorkload(record, id, "jwt", now);
    return this.result(id, node, "spiffe_jwt");
  }

  /** The SVID's issuance record names a workload of an unevicted node. */
  private async issuedToWorkload(record: IssuedSvidRecord | undefined, id: SpiffeId, kind: "x509" | "jwt", now: Date): Promise<NodeRecord> {
    if (!record || record.kind !== kind || record.spiffeId !== id.toString()) throw refuse("this SVID was not issued by this server");
    if (record.notAfter.getTime() <= now.getTime()) throw refuse("the SVID has expired");
    if (!record.nodeId) throw refuse("a node SVID is not an OAuth client credential: use a workload SVID");
    const node = await this.d.store.nodes.get(record.nodeId);
    if (!node || node.evicted) throw refuse("the node this SVID was issued to has been evicted");
    return node;
  }

  private member(spiffeId: string): SpiffeId {
    let id: SpiffeId;
    try {
      id = SpiffeId.parse(spiffeId);
    } catch {
      throw refuse("the client's SPIFFE ID is malformed");
    }
    if (!id.memberOf(this.d.trustDomain)) throw refuse(`the client is not in the trust domain ${this.d.trustDomain.name}`);
    return id;
  }

  private result(id: SpiffeId, node: NodeRecord, method: AuthenticatedClient["method"]): AuthenticatedClient {
    return { clientId: id.toString(), nodeId: node.spiffeId, ...nodeAttestation(node), method };
  }
}

/** How a node was attested, as an access token states it: the attestor, and for TPM nodes whether its key is TPM-resident. */
export function nodeAttestation(node: Pick<NodeRecord, "attestorType" | "selectors">): { attestor: string; keyResident?: boolean } {
  if (node.attestorType !== "tpm") return { attestor: node.attestorType };
  return { attestor: node.attestorType, keyResident: node.selectors.includes("tpm:key_resident:true") };
}

/** True when `e` refuses client authentication (answered 401 invalid_client). */
export const isClientRefusal = (e: unknown): e is HallmarkError => isHallmarkError(e) && e.code === "oauth_client_unauthenticated";
