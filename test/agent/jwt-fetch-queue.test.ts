import { describe, expect, it } from "vitest";
import { JwtFetchQueue, type JwtRequest } from "../../src/agent/jwt-fetch-queue.js";
import type { FetchedJwt } from "../../src/client/node.js";
import { HallmarkError } from "../../src/errors.js";

/**
 * The agent's coalescing of JWT-SVID fetches: what is asked in one turn of the event loop goes
 * out as batch requests of at most 64, and each caller gets its own answer. `send` here stands
 * for the node client's fetchJwtBatch and records what it was given (the server side of the
 * batch is tested against a real server in test/agent/entry-sync-api.test.ts).
 */
function recordingQueue(answer: (r: JwtRequest) => FetchedJwt | HallmarkError = (r) => token(r)) {
  const sent: JwtRequest[][] = [];
  let failWhole: Error | undefined;
  const queue = new JwtFetchQueue(async (requests) => {
    sent.push([...requests]);
    if (failWhole) throw failWhole;
    return requests.map(answer);
  });
  return { queue, sent, failNext: (e: Error) => (failWhole = e) };
}

const token = (r: JwtRequest): FetchedJwt => ({ spiffe_id: r.spiffeId, token: `t:${r.spiffeId}:${r.audience.join(",")}`, expires_at: "2030-01-01T00:00:00Z" });
const ask = (i: number): JwtRequest => ({ spiffeId: `spiffe://example.org/w/${i}`, audience: [`aud-${i}`] });

describe("JwtFetchQueue", () => {
  it("sends what is asked in one turn as one batch, in order, and each caller gets its own token", async () => {
    const { queue, sent } = recordingQueue();
    const answers = await Promise.all([0, 1, 2].map((i) => queue.fetch(ask(i))));
    expect(sent).toEqual([[ask(0), ask(1), ask(2)]]);
    expect(answers.map((a) => a.token)).toEqual(["t:spiffe://example.org/w/0:aud-0", "t:spiffe://example.org/w/1:aud-1", "t:spiffe://example.org/w/2:aud-2"]);
  });

  it("splits more than 64 into batches of at most 64", async () => {
    const { queue, sent } = recordingQueue();
    const answers = await Promise.all(Array.from({ length: 130 }, (_, i) => queue.fetch(ask(i))));
    expect(sent.map((b) => b.length)).toEqual([64, 64, 2]);
    expect(answers[129]!.spiffe_id).toBe("spiffe://example.org/w/129");
  });

  it("asks made in later turns go in later batches", async () => {
    const { queue, sent } = recordingQueue();
    await queue.fetch(ask(0));
    await queue.fetch(ask(1));
    expect(sent).toEqual([[ask(0)], [ask(1)]]);
  });

  it("a refused request rejects only its caller, with the server's code", async () => {
    const { queue } = recordingQueue((r) => (r.spiffeId.endsWith("/1") ? new HallmarkError("not_entitled", "no") : token(r)));
    const settled = await Promise.allSettled([0, 1, 2].map((i) => queue.fetch(ask(i))));
    expect(settled.map((s) => s.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect((settled[1] as PromiseRejectedResult).reason).toMatchObject({ code: "not_entitled" });
  });

  it("a batch that fails whole rejects each of its callers", async () => {
    const { queue, failNext } = recordingQueue();
    failNext(new HallmarkError("unavailable", "server down"));
    const settled = await Promise.allSettled([0, 1].map((i) => queue.fetch(ask(i))));
    expect(settled.map((s) => (s.status === "rejected" ? (s.reason as HallmarkError).code : "ok"))).toEqual(["unavailable", "unavailable"]);
  });

  it("a server answering fewer results than requests rejects the callers left without one", async () => {
    const queue = new JwtFetchQueue(async (requests) => [token(requests[0]!)]);
    const settled = await Promise.allSettled([0, 1].map((i) => queue.fetch(ask(i))));
    expect(settled.map((s) => s.status)).toEqual(["fulfilled", "rejected"]);
    expect((settled[1] as PromiseRejectedResult).reason).toMatchObject({ code: "unavailable" });
  });
});
