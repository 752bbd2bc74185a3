import { HallmarkError } from "../errors.js";
import { JWT_SPIFFE_ASSERTION_TYPE } from "../oauth/client-auth.js";
import { metadataPath } from "../oauth/metadata.js";
import { TOKEN_EXCHANGE_GRANT, TOKEN_TYPES } from "../oauth/token-request.js";
import { DpopKey, type DpopKeyInput } from "./dpop-key.js";
import { ApiClient, type ApiResponse } from "./http.js";
import { ServerList, type ServerTarget, splitServerUrls } from "./server-list.js";

/**
 * The agent's side of token exchange (RFC 8693): it finds the token endpoint from the issuer's
 * metadata (RFC 8414), authenticates with its SVID (mutual TLS with the X509-SVID, or a JWT-SVID
 * client assertion), sends the person's token with a DPoP proof (RFC 9449) and gets back an access
 * token bound to its DPoP key. The server is authenticated as every Hallmark client does it: its
 * certificate must chain to the trust bundle (the only CA) and carry the server's SPIFFE ID.
 */

/** How the client authenticates: its X509-SVID over mutual TLS, or a JWT-SVID as client assertion. */
export type ClientSvid = { certPem: string; keyPem: string } | { jwtSvid: string };

/** Short names for the subject token types (the CLI's --subject-token-type); a full URN is taken as is. */
export const SUBJECT_TOKEN_TYPE_NAMES = { jwt: TOKEN_TYPES.jwt, access_token: TOKEN_TYPES.accessToken, id_token: TOKEN_TYPES.idToken } as const;

export interface TokenExchangeRequest {
  /** The person's token (or one of ours, for a chain). */
  subjectToken: string;
  /** jwt | access_token | id_token, or the URN (urn:ietf:params:oauth:token-type:…). */
  subjectTokenType: string;
  /** The agent's own JWT-SVID (actor_token_type …:jwt). */
  actorToken?: string | undefined;
  scope?: string | readonly string[] | undefined;
  audience?: readonly string[] | undefined;
  resource?: readonly string[] | undefined;
  requestedTokenType?: string | undefined;
  /** The lifetime wanted, in seconds (`expires_in`, a Hallmark extension); default the server's. */
  expiresIn?: number | undefined;
  /** The key the token is bound to; none sends no proof (only where policy allows Bearer tokens). */
  dpopKey?: DpopKeyInput | DpopKey | undefined;
}

export interface TokenExchangeOptions extends TokenExchangeRequest {
  /**
   * The authorization server's issuer URL (delegation.issuer, by default the server's URL); or
   * several replicas (comma-separated, or a ServerList) of which the first URL is the issuer: its
   * endpoints are reached on whichever replica answers.
   */
  server: ServerTarget;
  trustBundlePem: string;
  /** The SPIFFE ID the server's certificate must carry; default any …/hallmark/server. */
  serverId?: string | undefined;
  svid: ClientSvid;
}

/** RFC 8693 §2.2.1. */
export interface TokenExchangeResponse {
  access_token: string;
  issued_token_type: string;
  token_type: string;
  expires_in?: number | undefined;
  scope?: string | undefined;
  [other: string]: unknown;
}

/** What an agent needs of RFC 8414 metadata. */
export interface AuthorizationServerMetadata {
  issuer: string;
  token_endpoint: string;
  introspection_endpoint?: string;
  revocation_endpoint?: string;
  jwks_uri?: string;
  [other: string]: unknown;
}

/** One exchange: discovery, the request (with one retry when the server asks for a DPoP nonce), the parsed answer. */
export async function exchangeToken(o: TokenExchangeOptions): Promise<TokenExchangeResponse> {
  const client = await TokenExchangeClient.discover(o);
  try {
    return await client.exchange(o);
  } finally {
    client.close();
  }
}

/** A client of one authorization server, its connections kept alive between exchanges. */
export class TokenExchangeClient {
  /** The server's last DPoP nonce (RFC 9449 §8): sent with the next proof, so a nonce costs one retry per client, not per exchange. */
  private nonce: string | undefined;

  private constructor(
    private readonly api: ApiClient,
    readonly metadata: AuthorizationServerMetadata,
    private readonly svid: ClientSvid,
  ) {}

  static async discover(o: Pick<TokenExchangeOptions, "server" | "trustBundlePem" | "serverId" | "svid"> & { maxSockets?: number }): Promise<TokenExchangeClient> {
    const servers = ServerList.from(o.server);
    const issuer = withoutTrailingSlash(typeof o.server === "string" ? splitServerUrls(o.server)[0]! : servers.urls[0]!.href);
    const api = new ApiClient(servers, {
      trustBundlePem: o.trustBundlePem,
      serverId: o.serverId,
      maxSockets: o.maxSockets,
      ...("certPem" in o.svid ? { certPem: o.svid.certPem, keyPem: o.svid.keyPem } : {}),
    });
    try {
      const metadata = checkMetadata(issuer, ok(await api.send("GET", metadataPath(issuer))));
      return new TokenExchangeClient(api, metadata, o.svid);
    } catch (e) {
      api.close();
      throw e;
    }
  }

  async exchange(r: TokenExchangeRequest): Promise<TokenExchangeResponse> {
    const dpop = r.dpopKey === undefined ? undefined : r.dpopKey instanceof DpopKey ? r.dpopKey : await DpopKey.from(r.dpopKey);
    const body = { bytes: Buffer.from(exchangeForm(r, this.svid).toString()), contentType: "application/x-www-form-urlencoded" };
    const post = async () => {
      const headers: Record<string, string> = dpop ? { dpop: await dpop.proof({ htm: "POST", htu: this.metadata.token_endpoint, nonce: this.nonce }) } : {};
      const res = await this.api.send("POST", this.metadata.token_endpoint, body, headers);
      const nonce = res.headers["dpop-nonce"];
      if (typeof nonce === "string" && nonce.length > 0) this.nonce = nonce;
      return res;
    };
    let res = await post();
    // RFC 9449 §8: a server that wants nonces refuses once with use_dpop_nonce and the nonce to use.
    if (dpop && res.status === 400 && oauthErrorOf(res) === "use_dpop_nonce" && typeof res.headers["dpop-nonce"] === "string") res = await post();
    return checkTokenResponse(ok(res));
  }

  close(): void {
    this.api.close();
  }
}

function exchangeForm(r: TokenExchangeRequest, svid: ClientSvid): URLSearchParams {
  const f = new URLSearchParams();
  f.set("grant_type", TOKEN_EXCHANGE_GRANT);
  f.set("subject_token", r.subjectToken);
  f.set("subject_token_type", subjectTokenTypeUrn(r.subjectTokenType));
  if (r.actorToken !== undefined) {
    f.set("actor_token", r.actorToken);
    f.set("actor_token_type", TOKEN_TYPES.jwt);
  }
  const scope = typeof r.scope === "string" ? r.scope.trim() : (r.scope ?? []).join(" ");
  if (scope.length > 0) f.set("scope", scope);
  for (const a of r.audience ?? []) f.append("audience", a);
  for (const u of r.resource ?? []) f.append("resource", u);
  if (r.requestedTokenType !== undefined) f.set("requested_token_type", r.requestedTokenType);
  if (r.expiresIn !== undefined) f.set("expires_in", String(r.expiresIn));
  if ("jwtSvid" in svid) {
    f.set("client_assertion_type", JWT_SPIFFE_ASSERTION_TYPE);
    f.set("client_assertion", svid.jwtSvid);
  }
  return f;
}

export function subjectTokenTypeUrn(type: string): string {
  return (SUBJECT_TOKEN_TYPE_NAMES as Record<string, string>)[type] ?? type;
}

const withoutTrailingSlash = (u: string) => u.replace(/\/+$/, "");

function oauthErrorOf(res: ApiResponse): string | undefined {
  const b = res.body as { error?: unknown } | undefined;
  return typeof b === "object" && b !== null && typeof b.error === "string" ? b.error : undefined;
}

/**
 * The answer's body when it is a success; otherwise the server's refusal as a HallmarkError with
 * its `code` (Hallmark puts one beside the OAuth `error`; another server's refusal is
 * oauth_refused, naming its `error`).
 */
function ok(res: ApiResponse): unknown {
  if (res.status === 200) return res.body;
  const b = (typeof res.body === "object" && res.body !== null ? res.body : {}) as { error?: unknown; error_description?: unknown; code?: unknown; detail?: unknown };
  const description = typeof b.error_description === "string" ? b.error_description : typeof b.detail === "string" ? b.detail : undefined;
  if (typeof b.code === "string") throw new HallmarkError(b.code, description ?? `HTTP ${res.status}`);
  if (typeof b.error === "string") throw new HallmarkError("oauth_refused", `${b.error}${description ? `: ${description}` : ""}`);
  throw new HallmarkError("unavailable", `the authorization server answered HTTP ${res.status}`);
}

/** RFC 8414 §3.3: the metadata's issuer must be the one asked for, or a server could speak for another. */
function checkMetadata(issuer: string, body: unknown): AuthorizationServerMetadata {
  const m = body as Partial<AuthorizationServerMetadata> | undefined;
  if (typeof m !== "object" || m === null || typeof m.issuer !== "string" || withoutTrailingSlash(m.issuer) !== issuer) {
    throw new HallmarkError("oauth_metadata_invalid", `the metadata at ${metadataPath(issuer)} is not for the issuer ${issuer}`);
  }
  if (typeof m.token_endpoint !== "string" || !m.token_endpoint.startsWith("https://")) {
    throw new HallmarkError("oauth_metadata_invalid", "the authorization server's metadata names no https token_endpoint");
  }
  return m as AuthorizationServerMetadata;
}

function checkTokenResponse(body: unknown): TokenExchangeResponse {
  const t = body as Partial<TokenExchangeResponse> | undefined;
  if (typeof t !== "object" || t === null || typeof t.access_token !== "string" || typeof t.token_type !== "string" || typeof t.issued_token_type !== "string") {
    throw new HallmarkError("unavailable", "the token endpoint's answer is not a token response (RFC 8693 §2.2.1)");
  }
  return t as TokenExchangeResponse;
}
