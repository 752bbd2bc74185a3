import { execFileSync } from "node:child_process";
import { closeSync, openSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attest, joinTokenProducer } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { createLogger } from "../../src/log.js";
import { type HttpsResult, httpsRaw, postJson } from "../helpers/https.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * A real full disk: the server's data directory is a small tmpfs, filled up with a file while
 * the server runs. Every request that needs a write must answer 503 store_unavailable as
 * problem+json (not 500), /readyz must say not ready, the log must stay short and stackless, and
 * once space is freed the server must recover by itself, with an intact audit chain.
 */
const dir = tempDir("disk-full");
const mountPoint = dir.path;

function tryMount(): string | undefined {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", mountPoint], { stdio: "pipe" });
    return undefined;
  } catch (e) {
    return `cannot mount a tmpfs here (${String((e as { stderr?: Buffer }).stderr ?? e).trim()}); this test needs root and mount(2)`;
  }
}
const skipReason = tryMount();
if (skipReason) console.warn(`disk-full.test.ts skipped: ${skipReason}`);

const lines: Array<Record<string, unknown>> = [];
const log = createLogger("info", { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
let server: TestServer;
const fillerPath = join(mountPoint, "filler");

/** Writes a file until the filesystem says ENOSPC, in ever smaller pieces, so not a byte is left. */
function fillDisk(): void {
  const fd = openSync(fillerPath, "w");
  try {
    for (const size of [1 << 20, 64 << 10, 4 << 10, 512, 1]) {
      const chunk = Buffer.alloc(size, 0x55);
      for (;;) {
        try {
          writeSync(fd, chunk);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
          break;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}

const openSession = () => postJson(`${server.url}/v1/attest/sessions`, { attestor: "join_token" });
const readyz = () => httpsRaw(`${server.url}/readyz`);
const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
const newToken = async (n: number) =>
  ((await admin("POST", "/admin/tokens", { spiffe_id: `spiffe://example.org/node/full-${n}`, ttl_seconds: 600 })) as { token: string }).token;

function expectStoreUnavailable(r: HttpsResult): void {
  expect(r.status, r.text).toBe(503);
  expect(r.contentType).toContain("application/problem+json");
  expect(r.body).toMatchObject({ status: 503, code: "store_unavailable", type: "urn:hallmark:error:store_unavailable" });
  expect(r.text).not.toMatch(/SQLITE|\.ts:\d+|\.js:\d+|at [A-Za-z]+ \(/);
}

/** Opens sessions until the first one the full disk refuses; the WAL may still have room for a few. */
async function untilRefused(): Promise<HttpsResult> {
  for (let i = 0; i < 2000; i++) {
    const r = await openSession();
    if (r.status !== 201) return r;
  }
  throw new Error("2000 sessions were stored on a full disk");
}

beforeAll(async () => {
  if (skipReason) return;
  server = await startTestServer({ dataDir: mountPoint, log });
}, 60_000);

afterAll(async () => {
  await server?.destroy();
  if (!skipReason) execFileSync("umount", [mountPoint]);
  dir.remove();
});

describe.skipIf(skipReason !== undefined)("a full disk under the datastore (tmpfs)", () => {
  it("answers 503 store_unavailable, is not ready, logs a few stackless lines, and recovers when space is freed", async () => {
    const tokens = [await newToken(1), await newToken(2)];
    expect((await readyz()).status).toBe(200);
    const linesBefore = lines.length;

    fillDisk();
    expectStoreUnavailable(await untilRefused());
    // A storm of requests during the outage: each one refused the same way, never a 500.
    for (let i = 0; i < 300; i++) expectStoreUnavailable(await openSession());
    const s = await postJson(`${server.url}/v1/attest/sessions`, { attestor: "join_token" });
    expectStoreUnavailable(s);
    const notReady = await readyz();
    expect(notReady.status).toBe(503);
    expect(notReady.body).toEqual({ status: "not_ready" });
    await expect(attest({ server: server.url, tls: {}, producer: joinTokenProducer(tokens[0]!) })).rejects.toMatchObject({ code: "store_unavailable" });

    const outage = lines.slice(linesBefore);
    const errors = outage.filter((l) => Number(l.level) >= 50);
    // 300+ failed requests: one line when the store starts failing, and from the API one line per
    // code per 10 s window, each later one counting the requests it stands for.
    const apiLines = errors.filter((l) => l.code === "store_unavailable");
    expect(apiLines.length).toBeGreaterThanOrEqual(1);
    expect(apiLines.slice(1).every((l) => Number(l.suppressed) > 0)).toBe(true);
    expect(errors.length).toBeLessThanOrEqual(10);
    expect(outage.length).toBeLessThanOrEqual(12);
    expect(errors.some((l) => l.sqlite === "SQLITE_FULL")).toBe(true);
    // Readiness retried a write during the outage and did not flap back to ready on a full disk.
    expect(outage.filter((l) => String(l.msg).startsWith("datastore failing")).length).toBe(1);
    expect(outage.some((l) => l.msg === "datastore writes succeed again")).toBe(false);
    expect(JSON.stringify(outage)).not.toMatch(/"stack"|\\n\s+at /);

    unlinkSync(fillerPath);
    const svid = await attest({ server: server.url, tls: {}, producer: joinTokenProducer(tokens[1]!) });
    expect(svid.spiffeId).toBe("spiffe://example.org/node/full-2");
    const ready = await readyz();
    expect(ready.status).toBe(200);
    expect(lines.some((l) => l.msg === "datastore writes succeed again")).toBe(true);
    expect(await admin("GET", "/admin/audit/verify")).toMatchObject({ ok: true });
  });

  it("comes back to ready by itself after space is freed, with no write request to prove it", async () => {
    fillDisk();
    expectStoreUnavailable(await untilRefused());
    expect((await readyz()).status).toBe(503);
    unlinkSync(fillerPath);
    // Taken out of rotation, the server gets no writes: readiness checks retry one themselves.
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await readyz()).status;
    }
    expect(status).toBe(200);
    expect((await openSession()).status).toBe(201);
  });
});
