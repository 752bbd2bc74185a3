import { HallmarkError } from "../errors.js";
import { type FetchedJwt, JWT_BATCH_SIZE } from "../client/node.js";

export interface JwtRequest {
  spiffeId: string;
  audience: readonly string[];
}

type Send = (requests: readonly JwtRequest[]) => Promise<Array<FetchedJwt | HallmarkError>>;

interface Queued extends JwtRequest {
  resolve: (r: FetchedJwt) => void;
  reject: (e: unknown) => void;
}

/**
 * The JWT-SVID fetches asked for in one turn of the event loop, sent together: one batch request
 * per JWT_BATCH_SIZE of them. A workload asking for all its identities, or many workloads asking at
 * once, cost the server one TLS request and one entitlement lookup per SPIFFE ID instead of one of
 * each per token, and their audit records share a commit (issue 10). Each caller gets its own
 * token or its own refusal; a batch that fails whole rejects each of its callers.
 */
export class JwtFetchQueue {
  private queued: Queued[] = [];

  constructor(private readonly send: Send) {}

  fetch(request: JwtRequest): Promise<FetchedJwt> {
    return new Promise((resolve, reject) => {
      if (this.queued.push({ ...request, resolve, reject }) === 1) setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    const all = this.queued;
    this.queued = [];
    for (let i = 0; i < all.length; i += JWT_BATCH_SIZE) {
      const batch = all.slice(i, i + JWT_BATCH_SIZE);
      this.send(batch.map(({ spiffeId, audience }) => ({ spiffeId, audience }))).then(
        (results) => batch.forEach((q, k) => settle(q, results[k])),
        (e: unknown) => batch.forEach((q) => q.reject(e)),
      );
    }
  }
}

function settle(q: Queued, r: FetchedJwt | HallmarkError | undefined): void {
  if (r === undefined) q.reject(new HallmarkError("unavailable", `the server gave no result for ${q.spiffeId}`));
  else if (r instanceof Error) q.reject(r);
  else q.resolve(r);
}
