import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { joinTokenHash } from "../../src/join-tokens/token.js";
import { AUDIT_EVENTS } from "../../src/service/audit-events.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { AuditRecord, Store } from "../../src/store/types.js";
import { httpsRaw, postJson } from "../helpers/https.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/**
 * Issue 7 item 5: anonymous callers must not grow the database without limit. Past its burst, one
 * address is refused with 429 and its refusals are counted into one summary audit record per
 * window instead of one record each; expired sessions and join tokens are purged on a schedule.
 * The server's clock is frozen (and moved by hand), so the token buckets never refill by accident.
 */
const BURST = 5;
let now = new Date();
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({
    clock: () => now,
    overrides: {
      limits: {
        handshakeTimeout: 10,
        headersTimeout: 10,
        requestTimeout: 30,
        idleTimeout: 15,
        maxConnections: 1000,
        maxConnectionsPerAddress: 1000,
        maxHeadersCount: 64,
        attestRate: { perSecond: 0.001, burst: BURST, trackedAddresses: 1000 },
        rateLimitAuditInterval: 1,
        purgeInterval: 1,
      },
    },
  });
});
afterAll(async () => {
  await server?.destroy();
});

async function withStore<T>(f: (s: Store) => Promise<T>): Promise<T> {
  const store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
  try {
    return await f(store);
  } finally {
    await store.close();
  }
}
const auditOf = (actor: string): Promise<AuditRecord[]> => withStore(async (s) => (await s.audit.list(0, 100_000)).filter((r) => r.actor === actor));

describe("anonymous callers and the database", () => {
  it("refuses one address past its burst with 429 and Retry-After, and audits the refusals as a summary", async () => {
    const answers = [];
    const started = performance.now();
    for (let i = 0; i < 60; i++) {
      answers.push(await postJson(`${server.url}/v1/attest/sessions/${randomUUID()}/evidence`, { csr: "x", evidence: {} }));
    }
    const passed = answers.filter((r) => r.status !== 429);
    const limited = answers.filter((r) => r.status === 429);
    expect(passed.map((r) => (r.body as { code: string }).code)).toEqual(Array(BURST).fill("session_not_found"));
    expect(limited).toHaveLength(60 - BURST);
    for (const r of limited) {
      expect(r.contentType).toContain("application/problem+json");
      expect(r.body).toMatchObject({ status: 429, code: "rate_limited", type: "urn:hallmark:error:rate_limited" });
      expect(Number(r.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    }
    // Another address has its own allowance.
    expect((await postJson(`${server.url}/v1/attest/sessions`, { attestor: "join_token" }, { localAddress: "127.0.0.2" })).status).toBe(201);

    // Counted: a metric, and (within a flush interval) summary records whose counts add up to every 429.
    const metrics = (await httpsRaw(`${server.url}/metrics`)).text;
    expect(metrics).toContain(`hallmark_rate_limited_total{route="/v1/attest/sessions/:id/evidence"} ${60 - BURST}`);
    const summaries = async () => (await auditOf("peer:127.0.0.1")).filter((r) => r.event === AUDIT_EVENTS.rateLimitedSummary);
    await vi.waitFor(async () => expect((await summaries()).reduce((n, r) => n + (r.details as { count: number }).count, 0)).toBe(60 - BURST), {
      timeout: 10_000,
      interval: 250,
    });
    for (const r of await summaries()) {
      expect(r).toMatchObject({ outcome: "refused", code: "rate_limited" });
      expect(r.details).toMatchObject({ routes: { "/v1/attest/sessions/:id/evidence": (r.details as { count: number }).count } });
    }
    // Bounded: the audit log holds one record per request that got through, and a few summaries, not 60 records:
    // at most one per summary window (rateLimitAuditInterval, 1 s of real time) the refusals and the wait spanned.
    const windows = Math.ceil((performance.now() - started) / 1000) + 1;
    const records = await auditOf("peer:127.0.0.1");
    expect(records.filter((r) => r.event === AUDIT_EVENTS.attest && r.code === "session_not_found")).toHaveLength(BURST);
    expect(records.filter((r) => r.code === "rate_limited").length).toBeLessThanOrEqual(Math.min(windows, 60 - BURST));
  });

  it("spends the same allowance on refused OAuth client authentications: past it, 429 in the OAuth error format and a summary instead of a record each", async () => {
    // Nobody authenticates: no client certificate, no assertion. Each refusal used to be one audit
    // record (and one transparency log leaf), as fast as the caller could send them.
    const from = "127.0.0.5";
    const routes = ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"];
    const body = `grant_type=${encodeURIComponent("urn:ietf:params:oauth:grant-type:token-exchange")}&subject_token=x&subject_token_type=${encodeURIComponent("urn:ietf:params:oauth:token-type:jwt")}&token=x`;
    const unauthenticated = async () => (await auditOf("unauthenticated")).length;
    const before = await unauthenticated();
    const answers = [];
    for (let i = 0; i < 30; i++) {
      const path = routes[i % routes.length]!;
      const r = await httpsRaw(`${server.url}${path}`, { method: "POST", body, headers: { "content-type": "application/x-www-form-urlencoded" }, localAddress: from });
      answers.push({ path, ...r });
    }
    const refused = answers.filter((r) => r.status === 401);
    const limited = answers.filter((r) => r.status === 429);
    expect(refused.map((r) => (r.body as { error: string }).error)).toEqual(Array(BURST).fill("invalid_client"));
    expect(limited).toHaveLength(30 - BURST);
    for (const r of limited) {
      expect(r.contentType).toContain("application/json");
      expect(r.body).toMatchObject({ error: "temporarily_unavailable", code: "rate_limited" });
      expect(Number(r.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    }
    // Audited one by one within the allowance; past it, only counted, into the address's summary.
    expect(await unauthenticated()).toBe(before + BURST);
    const routeCounts: Record<string, number> = {};
    for (const r of limited) routeCounts[r.path] = (routeCounts[r.path] ?? 0) + 1;
    await vi.waitFor(
      async () => {
        const summaries = (await auditOf(`peer:${from}`)).filter((r) => r.event === AUDIT_EVENTS.rateLimitedSummary);
        const summed: Record<string, number> = {};
        for (const r of summaries) for (const [route, n] of Object.entries((r.details as { routes: Record<string, number> }).routes)) summed[route] = (summed[route] ?? 0) + n;
        expect(summed).toEqual(routeCounts);
      },
      { timeout: 10_000, interval: 250 },
    );
  });

  it("purges expired sessions and join tokens on its schedule, and keeps unexpired ones", async () => {
    const open = async (from: string) => {
      const r = await postJson(`${server.url}/v1/attest/sessions`, { attestor: "join_token" }, { localAddress: from });
      expect(r.status).toBe(201);
      return (r.body as { session_id: string }).session_id;
    };
    const token = async (ttl: number) =>
      (expectOk(await adminRequest(server.adminSocket, "POST", "/admin/tokens", { spiffe_id: "spiffe://example.org/node/p", ttl_seconds: ttl })) as { token: string }).token;
    const stale = [await open("127.0.0.3"), await open("127.0.0.3")];
    const shortToken = joinTokenHash(await token(60));
    const longToken = joinTokenHash(await token(86_400));
    await withStore(async (s) => {
      for (const id of stale) expect(await s.sessions.get(id)).toBeDefined();
      expect(await s.joinTokens.get(shortToken)).toBeDefined();
    });

    now = new Date(now.getTime() + 3600_000); // sessions live 120 s, the short token 60 s
    const fresh = await open("127.0.0.4");
    await vi.waitFor(
      () =>
        withStore(async (s) => {
          for (const id of stale) expect(await s.sessions.get(id)).toBeUndefined();
          expect(await s.joinTokens.get(shortToken)).toBeUndefined();
        }),
      { timeout: 10_000, interval: 250 },
    );
    await withStore(async (s) => {
      expect(await s.sessions.get(fresh)).toBeDefined();
      expect(await s.joinTokens.get(longToken)).toBeDefined();
    });
  });
});
