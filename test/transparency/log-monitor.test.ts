import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { type Server, createServer } from "node:http";
import { request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { TILE_WIDTH, decodeEntryBundle, encodeEntryBundle } from "../../src/transparency/tiles.js";
import { type CliResult, runCli } from "../helpers/cli.js";
import { admitJoinTokenNode } from "../helpers/nodes.js";
import { tempDir } from "../helpers/tmp.js";
import { type TestServer, startTestServer } from "../helpers/server.js";

/**
 * `hallmark log monitor` against a live server (issue 12, phase 3), and through a plain-HTTP
 * mirror of its read API that removes, reorders or edits a leaf: each is refused with its code
 * and the monitor's state is left as it was.
 */
let server: TestServer;
let dir: { path: string; remove: () => void };
let bundleFile: string;
let logKey: string;
const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
const ok = (r: CliResult) => {
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
  return r;
};
const refused = (r: CliResult, code: string) => {
  expect(r.code, r.stdout + r.stderr).toBe(1);
  const lines = r.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^hallmark: ${code}: `));
};
const srv = () => ["--server", server.url, "--trust-bundle", bundleFile];

beforeAll(async () => {
  dir = tempDir("log-monitor");
  server = await startTestServer({ overrides: { transparency: { checkpointInterval: 0.3, integrationBatch: 50 } } });
  bundleFile = join(dir.path, "bundle.pem");
  writeFileSync(bundleFile, ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem);
  // A few leaves to follow: the mirror tampers with leaves 3 and 4.
  for (let i = 0; i < 3; i++) await admitJoinTokenNode(server, `spiffe://example.org/node/mon-${i}`);
  const text = (await import("../../src/client/log-client.js")).LogClient;
  logKey = await new text(server.url, { trustBundlePem: readFileSync(bundleFile, "utf8") }).verifierKey();
});
afterAll(async () => {
  await server?.destroy();
  dir?.remove();
});

describe("hallmark log monitor", () => {
  const monitor = (state: string, server = srv()) => runCli(["log", "monitor", ...server, "--key", logKey, "--state", state, "--once"]);

  it("prints every leaf once, then only the new ones, checking each checkpoint extends the last", async () => {
    const state = join(dir.path, "monitor.json");
    const first = ok(await monitor(state));
    const firstLines = first.stdout.trim().split("\n");
    const size1 = (JSON.parse(readFileSync(state, "utf8")) as { treeSize: number }).treeSize;
    expect(firstLines).toHaveLength(size1);
    expect(firstLines.map((l) => Number(l.split(" ")[0]))).toEqual(Array.from({ length: size1 }, (_, i) => i));
    await admitJoinTokenNode(server, "spiffe://example.org/node/cli-monitor");
    const second = ok(await monitor(state));
    const lines = second.stdout.trim().split("\n");
    const size2 = (JSON.parse(readFileSync(state, "utf8")) as { treeSize: number }).treeSize;
    expect(size2).toBeGreaterThan(size1);
    expect(lines).toHaveLength(size2 - size1);
    expect(Number(lines[0]!.split(" ")[0])).toBe(size1);
    expect(lines.some((l) => / attest success spiffe:\/\/example\.org\/node\/cli-monitor [0-9a-f]+$/.test(l))).toBe(true);
  });

  describe("through a mirror that tampers with the entries", () => {
    let mirror: Server;
    let mode: "removed" | "reordered" | "edited" | "none" = "none";
    let mirrorUrl: string;

    beforeAll(async () => {
      // A plain-HTTP mirror of the read API (allowed: everything is checked against the log key),
      // changing the first entry bundle as `mode` says.
      const ca = readFileSync(bundleFile, "utf8");
      mirror = createServer((req, res) => {
        const up = httpsRequest(`${server.url}${req.url}`, { ca, checkServerIdentity: () => undefined }, (u) => {
          const chunks: Buffer[] = [];
          u.on("data", (c: Buffer) => chunks.push(c));
          u.on("end", () => {
            let body: Buffer = Buffer.concat(chunks);
            const m = /^\/log\/tile\/entries\/000(?:\.p\/(\d+))?$/.exec(req.url ?? "");
            if (m && u.statusCode === 200 && mode !== "none") {
              const entries = decodeEntryBundle(body, m[1] ? Number(m[1]) : TILE_WIDTH);
              if (mode === "removed") entries.splice(3, 1);
              if (mode === "reordered") [entries[3], entries[4]] = [entries[4]!, entries[3]!];
              if (mode === "edited") entries[3] = Buffer.from(entries[3]!.toString().replace(/"time":"(\d{4})/, (_x, y: string) => `"time":"${Number(y) - 1}`));
              body = encodeEntryBundle(entries);
            }
            res.writeHead(u.statusCode ?? 502, { "content-type": u.headers["content-type"] ?? "application/octet-stream" });
            res.end(body);
          });
        });
        up.on("error", () => res.writeHead(502).end());
        up.end();
      });
      await new Promise<void>((r) => mirror.listen(0, "127.0.0.1", r));
      mirrorUrl = `http://127.0.0.1:${(mirror.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await new Promise<void>((r) => mirror?.close(() => r()));
    });

    it("an honest mirror is followed like the server", async () => {
      mode = "none";
      ok(await monitor(join(dir.path, "mirror-ok.json"), ["--server", mirrorUrl]));
    });

    it.each([
      ["removed", "tlog_tile_invalid"],
      ["reordered", "tlog_entries_invalid"],
      ["edited", "tlog_entries_invalid"],
    ] as const)("a %s leaf is refused (%s) and no state is written", async (m, code) => {
      mode = m;
      const state = join(dir.path, `mirror-${m}.json`);
      refused(await monitor(state, ["--server", mirrorUrl]), code);
      expect(existsSync(state)).toBe(false);
    });

    it("a state whose checkpoint is not extended by the log is refused as inconsistent", async () => {
      mode = "none";
      const state = join(dir.path, "mirror-fork.json");
      ok(await monitor(state, ["--server", mirrorUrl]));
      const s = JSON.parse(readFileSync(state, "utf8")) as { treeSize: number; checkpoint: string };
      // The state claims a larger tree than the log has now: a rollback from its point of view.
      writeFileSync(state, JSON.stringify({ ...s, treeSize: s.treeSize + 1000 }));
      refused(await monitor(state, ["--server", mirrorUrl]), "tlog_checkpoint_inconsistent");
    });
  });
});
