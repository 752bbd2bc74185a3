/**
 * The seams of the SPIFFE Workload API (issue 9), so that its three parts are built and tested
 * apart: the kernel's word on who is calling (peer credentials, unix workload attestation), the
 * agent's cache of what this node may hand out (WorkloadIdentities), and the gRPC service that
 * serves them on the local socket. Nothing here knows gRPC, HTTP or the kernel.
 */

/** What the kernel says about the process at the other end of an accepted Unix socket (SO_PEERCRED). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * Unix workload attestation: the selectors of a caller (`unix:uid:1001`, `unix:user:billing`,
 * `unix:gid:…`, `unix:group:…`, `unix:supplementary_gid:…`, `unix:supplementary_group:…`, and
 * with path discovery `unix:path:…`, `unix:sha256:…`), read while the process is provably the
 * one that connected (pid reuse is refused).
 */
export interface WorkloadAttestor {
  attest(peer: PeerCredentials): Promise<string[]>;
}

/** One X.509-SVID as the Workload API hands it out. */
export interface WorkloadX509Svid {
  spiffeId: string;
  /** DER: the leaf first, then intermediates. */
  certChain: Buffer[];
  /** DER, unencrypted PKCS#8. */
  privateKey: Buffer;
  /** DER certificates of the SVID's own trust domain. */
  bundle: Buffer[];
  /** Passed through from the registration entry, when it has one. */
  hint: string;
  expiresAt: Date;
  /**
   * Trust domain IDs (spiffe://td) the entry federates with: the foreign bundles a workload with
   * this SVID receives, and whose JWT-SVIDs it may validate (issue 14).
   */
  federatesWith: string[];
}

export interface WorkloadJwtSvid {
  spiffeId: string;
  token: string;
  hint: string;
}

/**
 * One WIT-SVID as the Workload API hands it out: the token and the private key it binds, which
 * the agent generated (the server only ever sees the public half, POST /v1/svids/wit).
 */
export interface WorkloadWitSvid {
  spiffeId: string;
  /** JWS compact serialisation, `typ` wit+jwt; its `cnf.jwk` is the public half of `privateKeyJwk`. */
  token: string;
  /** The private key as a JWK (RFC 7517) with `alg`, as the standard's `wit_svid_key` carries it. */
  privateKeyJwk: Record<string, unknown>;
  /** Passed through from the registration entry, when it has one. */
  hint: string;
  expiresAt: Date;
}

/**
 * What the agent may hand out to a caller with these selectors: entries the server says this node
 * is entitled to whose selectors are all among the caller's. Empty lists mean "not entitled"
 * (the Workload API answers PermissionDenied). `onChange` fires whenever any answer may differ
 * (an SVID renewed, an entry added or removed, a bundle rotated), so streams resend full state.
 */
export interface WorkloadIdentities {
  x509Svids(selectors: readonly string[]): Promise<WorkloadX509Svid[]>;
  /**
   * `spiffeId` narrows to one identity; refused when the caller is not entitled to it.
   * `admitFetches(n)` is called, before anything is asked of the server, with the number of them
   * that are not held (or being fetched) already and must be fetched; it throws to refuse the call.
   */
  jwtSvids(selectors: readonly string[], audience: readonly string[], spiffeId?: string, admitFetches?: (n: number) => void): Promise<WorkloadJwtSvid[]>;
  /**
   * Trust domain ID (spiffe://td) → DER certificates: this trust domain and every federated one
   * held. The service narrows the federated ones to those the caller's entries federate with.
   */
  x509Bundles(): Promise<Map<string, Buffer[]>>;
  /** Trust domain ID (spiffe://td) → JWKS (a SPIFFE bundle's JWT authorities); as x509Bundles, every domain held. */
  jwtBundles(): Promise<Map<string, Record<string, unknown>>>;
  /** WIT-SVIDs for the same entries as x509Svids (the service narrows to a requested SPIFFE ID). */
  witSvids(selectors: readonly string[]): Promise<WorkloadWitSvid[]>;
  /** Trust domain ID (spiffe://td) → JWKS of the WIT-SVID keys (a SPIFFE bundle's `use` wit-svid elements, each with its kid). */
  witBundles(): Promise<Map<string, Record<string, unknown>>>;
  /**
   * Verifies a JWT-SVID against the JWT bundle of its subject's trust domain and the audience; its
   * SPIFFE ID and claims. A subject of another trust domain is accepted only when that domain is
   * in `federatedWith` (trust domain IDs: what the caller's entries federate with; none when absent).
   */
  validateJwtSvid(token: string, audience: string, federatedWith?: ReadonlySet<string>): Promise<{ spiffeId: string; claims: Record<string, unknown> }>;
  onChange(listener: () => void): () => void;
}

/** The Workload API on its Unix socket (src/workload-api/server.ts implements it). */
export interface WorkloadApiOptions {
  /** The socket path; its directory is created 0755 and the socket 0777 (any local process may ask; the kernel says who asked). */
  socketPath: string;
  identities: WorkloadIdentities;
  attestor: WorkloadAttestor;
}

export interface RunningWorkloadApi {
  socketPath: string;
  close(): Promise<void>;
}
