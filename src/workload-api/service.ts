import {
  type Metadata,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import { TokenBuckets } from "../service/token-buckets.js";
import { SpiffeId } from "../spiffe/id.js";
import { workloadApiError } from "./errors.js";
import { toGrpcError } from "./grpc-status.js";
import type { WorkloadIdentities, WorkloadWitSvid, WorkloadX509Svid } from "./ports.js";

/** Who is calling, as attested for this call. */
export interface WorkloadCaller {
  uid: number;
  pid: number;
  selectors: string[];
  /** Throws (Unauthenticated) once the pid no longer names the process that connected; called before every answer. */
  assertStillConnected(): void;
}

export interface WorkloadServiceLimits {
  /** Open streams one uid may hold at once (beyond: RESOURCE_EXHAUSTED), so one workload cannot starve the others. */
  maxStreamsPerUid: number;
  /** Updates after a change are spread over this many milliseconds, so thousands of streams do not all refetch at once. */
  updateJitterMs: number;
  /**
   * JWT-SVIDs the agent may fetch from the server for one uid (those its cache does not hold):
   * `burst` at once, `perSecond` after. The server limits each node (limits.issuanceRate); this
   * keeps one workload asking for ever new audiences from spending its neighbours' share.
   */
  jwtFetchRate: { perSecond: number; burst: number };
}

/** Uids whose JWT fetch allowance is remembered; the least recently seen is forgotten first. */
const TRACKED_UIDS = 10_000;

export interface WorkloadServiceDeps {
  identities: WorkloadIdentities;
  /** The attested caller of a call (its connection's peer credentials), or a refusal. */
  callerOf(call: { getPeer(): string }): Promise<WorkloadCaller>;
  limits: WorkloadServiceLimits;
  log?: Logger;
}

/** SPIFFE_Workload_API.md: every call carries this metadata, proving it was not forwarded by a confused proxy. */
function requireSecurityHeader(metadata: Metadata): void {
  if (!metadata.get("workload.spiffe.io").includes("true")) {
    throw workloadApiError("workload_header_missing", "the call must carry the metadata workload.spiffe.io: true");
  }
}

function trustDomainIdOf(spiffeId: string): string {
  return SpiffeId.parse(spiffeId).trustDomain.idString;
}

/**
 * The trust domains a caller's answers cover: those of its SVIDs, and the foreign ones its
 * matching entries federate with (the union over its entries: a workload with two identities sees
 * what either may trust). A domain held by the agent for another workload is never among them.
 */
function trustDomainsOf(svids: readonly WorkloadX509Svid[]): { own: Set<string>; federated: Set<string> } {
  const own = new Set(svids.map((s) => trustDomainIdOf(s.spiffeId)));
  const federated = new Set(svids.flatMap((s) => s.federatesWith).filter((td) => !own.has(td)));
  return { own, federated };
}

/** The entries of `bundles` whose trust domain is in `domains`. */
function narrowed<T>(bundles: ReadonlyMap<string, T>, domains: ReadonlySet<string>): Map<string, T> {
  return new Map([...bundles].filter(([td]) => domains.has(td)));
}

function notEntitled(): never {
  throw workloadApiError("workload_not_entitled", "no registration entry matches this workload");
}

/**
 * SPIFFE_Workload_API.md §5.2.1 (and the JWT and WIT responses alike): when `hint` is set, "servers
 * MUST ensure that the value is unique among SVIDs in this response". The first SVID with a hint
 * keeps it; a later SVID with the same hint is left out of the response, as SPIRE's agent does:
 * the hint is how a workload picks among its SVIDs, so an SVID sent without the hint its operator
 * gave it could be picked for a use nobody meant.
 */
function withUniqueHints<T extends { spiffeId: string; hint: string }>(svids: T[], log: Logger | undefined): T[] {
  const seen = new Set<string>();
  return svids.filter((s) => {
    if (s.hint === "") return true;
    if (seen.has(s.hint)) {
      log?.warn({ spiffeId: s.spiffeId, hint: s.hint }, "workload API: leaving out an SVID whose hint another SVID of the response already has");
      return false;
    }
    seen.add(s.hint);
    return true;
  });
}

/**
 * The JSON claims of a JWT as a google.protobuf.Struct. protobufjs defines the well-known types
 * with camelCase field names, whatever keepCase says for our own messages.
 */
function toStruct(obj: Record<string, unknown>): { fields: Record<string, unknown> } {
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, toValue(v)])) };
}
function toValue(v: unknown): unknown {
  if (v === null || v === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v as Record<string, unknown>) };
}

/**
 * The handlers of `SpiffeWorkloadAPI`. They never see a socket: the caller comes from `callerOf`,
 * what it may have from `identities`. Streams send the full current state at once, then again
 * (after a small random delay) whenever `identities` reports a change.
 */
export function workloadApiHandlers(deps: WorkloadServiceDeps): UntypedServiceImplementation {
  const { identities, limits, log } = deps;
  const streamsPerUid = new Map<number, number>();

  async function entitledSvids(caller: WorkloadCaller): Promise<WorkloadX509Svid[]> {
    const svids = await identities.x509Svids(caller.selectors);
    if (svids.length === 0) notEntitled();
    return svids;
  }

  async function x509SvidResponse(caller: WorkloadCaller) {
    const svids = await entitledSvids(caller);
    const { federated } = trustDomainsOf(svids);
    const held = await identities.x509Bundles();
    return {
      svids: withUniqueHints(svids, log).map((s) => ({
        spiffe_id: s.spiffeId,
        x509_svid: Buffer.concat(s.certChain),
        x509_svid_key: s.privateKey,
        bundle: Buffer.concat(s.bundle),
        hint: s.hint,
      })),
      crl: [],
      federated_bundles: Object.fromEntries([...narrowed(held, federated)].map(([td, certs]) => [td, Buffer.concat(certs)])),
    };
  }

  // As SPIRE without "allow unauthenticated verifiers": bundles only for workloads with an identity
  // here, and (SPIFFE_Workload_API.md §5.3, §6.3) those of its own trust domain and of the domains its entries federate with.
  async function x509BundlesResponse(caller: WorkloadCaller) {
    const { own, federated } = trustDomainsOf(await entitledSvids(caller));
    const bundles = narrowed(await identities.x509Bundles(), new Set([...own, ...federated]));
    return { crl: [], bundles: Object.fromEntries([...bundles].map(([td, certs]) => [td, Buffer.concat(certs)])) };
  }

  async function jwtBundlesResponse(caller: WorkloadCaller) {
    const { own, federated } = trustDomainsOf(await entitledSvids(caller));
    const bundles = narrowed(await identities.jwtBundles(), new Set([...own, ...federated]));
    return { bundles: Object.fromEntries([...bundles].map(([td, jwks]) => [td, Buffer.from(JSON.stringify(jwks))])) };
  }

  /** WIT-SVID profile (SPIFFE_Workload_API.md §7.2.1): all identities, or the one named; none is PermissionDenied. */
  async function witSvidResponse(caller: WorkloadCaller, request: { spiffe_id?: string }) {
    const wanted = request.spiffe_id ?? "";
    if (wanted !== "") SpiffeId.parse(wanted);
    const svids = (await identities.witSvids(caller.selectors)).filter((s: WorkloadWitSvid) => wanted === "" || s.spiffeId === wanted);
    if (svids.length === 0) notEntitled();
    return { svids: withUniqueHints(svids, log).map((s) => ({ spiffe_id: s.spiffeId, wit_svid: s.token, wit_svid_key: JSON.stringify(s.privateKeyJwk), hint: s.hint })) };
  }

  /** §7.2.2: JWK Sets as JSON text; a key without a `kid` is left out (every key MUST have one). */
  async function witBundlesResponse(caller: WorkloadCaller) {
    await entitledSvids(caller);
    const bundles = await identities.witBundles();
    const withKids = (jwks: Record<string, unknown>) => ({
      ...jwks,
      keys: (Array.isArray(jwks.keys) ? jwks.keys : []).filter((k: unknown) => typeof (k as { kid?: unknown })?.kid === "string"),
    });
    return { bundles: Object.fromEntries([...bundles].map(([td, jwks]) => [td, JSON.stringify(withKids(jwks))])) };
  }

  const jwtFetches = new TokenBuckets({ ...limits.jwtFetchRate, maxKeys: TRACKED_UIDS });
  function admitJwtFetches(uid: number, n: number): void {
    // A workload with more identities than the burst asks for all of them at the price of a full
    // bucket, or it could never be served; its identities are entries, not its choice.
    const r = jwtFetches.take(String(uid), Math.min(n, limits.jwtFetchRate.burst));
    if (!r.ok) {
      throw workloadApiError("workload_too_many_fetches", `this user asked for more new JWT-SVIDs than its allowance; retry in ${r.retryAfterSeconds} s`);
    }
  }

  function takeStreamSlot(uid: number): () => void {
    const open = streamsPerUid.get(uid) ?? 0;
    if (open >= limits.maxStreamsPerUid) {
      throw workloadApiError("workload_too_many_streams", `this user already holds ${open} open Workload API streams`);
    }
    streamsPerUid.set(uid, open + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (streamsPerUid.get(uid) ?? 1) - 1;
      if (n === 0) streamsPerUid.delete(uid);
      else streamsPerUid.set(uid, n);
    };
  }

  function stream<Req>(build: (caller: WorkloadCaller, request: Req) => Promise<object>) {
    return (call: ServerWritableStream<Req, object>): void => {
      let closed = false;
      let release = (): void => undefined;
      let unsubscribe = (): void => undefined;
      let timer: NodeJS.Timeout | undefined;
      let sending: Promise<void> = Promise.resolve();
      const finish = (): void => {
        closed = true;
        clearTimeout(timer);
        unsubscribe();
        release();
      };
      const fail = (e: unknown): void => {
        if (closed) return;
        finish();
        call.emit("error", toGrpcError(e, log));
      };
      call.on("cancelled", finish);
      call.on("close", finish);
      call.on("error", finish);

      const sendCurrent = (caller: WorkloadCaller): Promise<void> =>
        // One send at a time, in order: a slow build never overtakes a newer one.
        (sending = sending.then(async () => {
          if (closed) return;
          try {
            const message = await build(caller, call.request);
            caller.assertStillConnected();
            if (!closed) call.write(message);
          } catch (e) {
            fail(e);
          }
        }));

      void (async () => {
        try {
          requireSecurityHeader(call.metadata);
          const caller = await deps.callerOf(call);
          if (closed) return;
          release = takeStreamSlot(caller.uid);
          await sendCurrent(caller);
          if (closed) return;
          unsubscribe = identities.onChange(() => {
            if (closed || timer) return;
            timer = setTimeout(() => {
              timer = undefined;
              void sendCurrent(caller);
            }, Math.random() * limits.updateJitterMs);
          });
        } catch (e) {
          fail(e);
        }
      })();
    };
  }

  function unary<Req, Res>(answer: (request: Req, caller: WorkloadCaller) => Promise<Res>) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
      void (async () => {
        try {
          requireSecurityHeader(call.metadata);
          const caller = await deps.callerOf(call);
          const response = await answer(call.request, caller);
          caller.assertStillConnected();
          callback(null, response);
        } catch (e) {
          callback(toGrpcError(e, log));
        }
      })();
    };
  }

  return {
    FetchX509SVID: stream(x509SvidResponse),
    FetchX509Bundles: stream(x509BundlesResponse),
    FetchJWTBundles: stream(jwtBundlesResponse),
    FetchWITSVID: stream(witSvidResponse),
    FetchWITBundles: stream(witBundlesResponse),
    FetchJWTSVID: unary(async (req: { audience: string[]; spiffe_id: string }, caller) => {
      if (req.audience.length === 0 || req.audience.some((a) => a === "")) {
        throw workloadApiError("workload_request_invalid", "audience is required");
      }
      if (req.spiffe_id !== "") SpiffeId.parse(req.spiffe_id);
      const svids = await identities.jwtSvids(caller.selectors, req.audience, req.spiffe_id || undefined, (n) => admitJwtFetches(caller.uid, n));
      if (svids.length === 0) notEntitled();
      return { svids: withUniqueHints(svids, log).map((s) => ({ spiffe_id: s.spiffeId, svid: s.token, hint: s.hint })) };
    }),
    ValidateJWTSVID: unary(async (req: { audience: string; svid: string }, caller) => {
      if (req.audience === "") throw workloadApiError("workload_request_invalid", "audience is required");
      if (req.svid === "") throw workloadApiError("workload_request_invalid", "svid is required");
      const { federated } = trustDomainsOf(await entitledSvids(caller));
      let validated: { spiffeId: string; claims: Record<string, unknown> };
      try {
        // A foreign JWT-SVID only for a caller whose entries federate with its trust domain.
        validated = await identities.validateJwtSvid(req.svid, req.audience, federated);
      } catch (e) {
        // The standard answers InvalidArgument to a JWT-SVID that does not validate, whatever the reason.
        const status = toGrpcError(e, log);
        throw workloadApiError("workload_jwt_invalid", `the JWT-SVID does not validate (${status.details})`, { cause: e });
      }
      return { spiffe_id: validated.spiffeId, claims: toStruct(validated.claims) };
    }),
  };
}
