import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { isHallmarkError } from "../../src/errors.js";
import { parseVerifierKey } from "../../src/transparency/note.js";
import { parseReceipt, verifyReceipt } from "../../src/transparency/receipt.js";
import { type CliResult, runCli } from "../helpers/cli.js";
import { buildGoTlogcheck, goTlogcheckMissing, runGoTlogcheck } from "../helpers/go-tlogcheck.js";
import { tempDir } from "../helpers/tmp.js";
import { type TestServer, startTestServer } from "../helpers/server.js";

/**
 * The auditor's CLI against a live server (issue 12, phase 3): real server, real SoftHSM2 key,
 * the built `hallmark` run as a process. Receipts written by attest and fetch are verified
 * offline by the CLI and by Go's tlog.CheckRecord; tampering is refused with stable codes.
 */
let server: TestServer;
let dir: { path: string; remove: () => void };
let bundleFile: string;
let logKey: string;
const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
const ok = (r: CliResult) => {
  expect(r.stderr + r.stdout).toBeDefined();
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

/** A node attested by the CLI, with its receipt beside the SVID. */
async function attestNode(id: string, out: string): Promise<CliResult> {
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: id, ttl_seconds: 600 })) as { token: string };
  return ok(await runCli(["attest", ...srv(), "--join-token", token, "--out", out, "--receipt-wait", "20s"]));
}

beforeAll(async () => {
  dir = tempDir("log-cli");
  server = await startTestServer({ overrides: { transparency: { checkpointInterval: 0.3, integrationBatch: 50 } } });
  bundleFile = join(dir.path, "bundle.pem");
  writeFileSync(bundleFile, ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem);
  logKey = ok(await runCli(["log", "key", ...srv()])).stdout.trim();
});
afterAll(async () => {
  await server?.destroy();
  dir?.remove();
});

describe("hallmark log: checkpoints, receipts and consistency against a live server", () => {
  let nodeDir: string;
  let oldCheckpoint: string;

  it("log key prints the verifier key named by the origin; log checkpoint verifies and prints the note", async () => {
    expect(logKey).toMatch(/^example\.org\/hallmark-log\+[0-9a-f]{8}\+/);
    const r = ok(await runCli(["log", "checkpoint", ...srv(), "--key", logKey]));
    expect(r.stdout.split("\n")[0]).toBe("example.org/hallmark-log");
    oldCheckpoint = join(dir.path, "old.checkpoint");
    writeFileSync(oldCheckpoint, r.stdout);
    const j = JSON.parse(ok(await runCli(["log", "checkpoint", ...srv(), "--key", logKey, "--json"])).stdout) as { tree_size: number };
    expect(j.tree_size).toBeGreaterThanOrEqual(Number(r.stdout.split("\n")[1]));
  });

  it("attest writes receipt.json beside the SVID; verify-inclusion checks it offline, by --receipt and by --svid", async () => {
    nodeDir = join(dir.path, "node");
    await attestNode("spiffe://example.org/node/cli-1", nodeDir);
    expect(existsSync(join(nodeDir, "receipt.json"))).toBe(true);
    const r = ok(await runCli(["log", "verify-inclusion", "--receipt", join(nodeDir, "receipt.json"), "--key", logKey]));
    expect(r.stdout).toMatch(/^ok: leaf \d+ \(attest success spiffe:\/\/example\.org\/node\/cli-1 serial [0-9a-f]+\)/);
    ok(await runCli(["log", "verify-inclusion", "--svid", join(nodeDir, "svid.pem"), "--key", logKey]));
    // The server is not needed: the key may come from a file too.
    const keyFile = join(dir.path, "log.key");
    writeFileSync(keyFile, `${logKey}\n`);
    ok(await runCli(["log", "verify-inclusion", "--receipt", join(nodeDir, "receipt.json"), "--key", keyFile]));
  });

  it("fetch x509 and fetch jwt write receipts that the CLI verifies; --svid refuses another SVID's receipt", async () => {
    await admin("POST", "/admin/entries", { parent_id: "spiffe://example.org/node/cli-1", spiffe_id: "spiffe://example.org/w/cli", selectors: ["unix:uid:1000"] });
    const node = ["--svid", join(nodeDir, "svid.pem"), "--key", join(nodeDir, "svid.key")];
    const x509Dir = join(dir.path, "x509");
    ok(await runCli(["fetch", "x509", ...srv(), ...node, "--out", x509Dir]));
    const r = ok(await runCli(["log", "verify-inclusion", "--svid", join(x509Dir, "svid.pem"), "--key", logKey]));
    expect(r.stdout).toContain("spiffe://example.org/w/cli");
    const jwtDir = join(dir.path, "jwt");
    ok(await runCli(["fetch", "jwt", ...srv(), ...node, "--audience", "a", "--out", jwtDir]));
    ok(await runCli(["log", "verify-inclusion", "--receipt", join(jwtDir, "receipt.json"), "--key", logKey]));
    // The node SVID with the workload SVID's receipt: a valid receipt, about something else.
    refused(await runCli(["log", "verify-inclusion", "--svid", join(nodeDir, "svid.pem"), "--receipt", join(x509Dir, "receipt.json"), "--key", logKey]), "tlog_receipt_mismatch");
  });

  it("Go's tlog.CheckRecord and note.Open accept the receipts attest and fetch wrote, and refuse a tampered one", async (ctx) => {
    const missing = goTlogcheckMissing();
    if (missing) {
      console.warn(`[log-cli] skipped: ${missing}`);
      ctx.skip();
    }
    const proofs = ["node", "x509", "jwt"].map((d) => (JSON.parse(readFileSync(join(dir.path, d, "receipt.json"), "utf8")) as { tlog_proof: string }).tlog_proof);
    const tampered = proofs[0]!.replace(/^index (\d+)$/m, (_m, n: string) => `index ${Number(n) + 1}`);
    const binary = buildGoTlogcheck(dir.path);
    const result = await runGoTlogcheck(binary, { receipts: [...proofs.map((p) => ({ verifierKey: logKey, tlogProof: p, valid: true })), { verifierKey: logKey, tlogProof: tampered, valid: false }] });
    expect(result.failures).toEqual([]);
    expect(result.checked.receipt).toBe(3);
    expect(result.checked.receiptRefused).toBe(1);
  });

  it("a receipt with any member modified is refused, each with its code; the tlog-proof text alone verifies", async () => {
    const original = JSON.parse(readFileSync(join(nodeDir, "receipt.json"), "utf8")) as Record<string, unknown>;
    // Each edit through the same parse-and-verify the CLI runs (one CLI run below shows the exit and line).
    const tryWith = async (edit: (r: Record<string, unknown>) => void, code: string) => {
      const r = structuredClone(original);
      edit(r);
      let thrown: unknown;
      try {
        verifyReceipt(parseReceipt(JSON.stringify(r)), { logKey: parseVerifierKey(logKey), witnesses: [], witnessesNeeded: 0 });
      } catch (e) {
        thrown = e;
      }
      expect(isHallmarkError(thrown) && thrown.code).toBe(code);
    };
    const file = join(dir.path, "bad.json");
    writeFileSync(file, JSON.stringify({ ...original, index: (original.index as number) + 1 }));
    refused(await runCli(["log", "verify-inclusion", "--receipt", file, "--key", logKey]), "tlog_receipt_malformed");
    const proofOnly = (edit: (r: Record<string, unknown>) => void) => (r: Record<string, unknown>) => {
      delete r.tlog_proof;
      edit(r);
    };
    const flip = (b64: string) => {
      const b = Buffer.from(b64, "base64");
      b[b.length - 1]! ^= 1;
      return b.toString("base64");
    };
    // With tlog_proof present, any member edited alone disagrees with it.
    await tryWith((r) => (r.index = (r.index as number) + 1), "tlog_receipt_malformed");
    // Without it, each edit must fail verification itself.
    await tryWith(proofOnly((r) => (r.index = (r.index as number) - 1)), "tlog_proof_invalid");
    await tryWith(proofOnly((r) => (r.index = (r.index as number) + 1000)), "tlog_out_of_range");
    await tryWith(proofOnly((r) => (r.entry = Buffer.from(Buffer.from(r.entry as string, "base64").toString().replace("success", "failure")).toString("base64"))), "tlog_proof_invalid");
    await tryWith(proofOnly((r) => ((r.inclusion_proof as string[])[0] = flip((r.inclusion_proof as string[])[0]!))), "tlog_proof_invalid");
    await tryWith(proofOnly((r) => (r.inclusion_proof = (r.inclusion_proof as string[]).slice(1))), "tlog_proof_invalid");
    await tryWith(proofOnly((r) => (r.tree_size = (r.tree_size as number) + 1)), "tlog_receipt_malformed");
    await tryWith(proofOnly((r) => (r.checkpoint = (r.checkpoint as string).replace(/^(.*)\n(\d+)\n/, (_m, o: string, n: string) => `${o}\n${Number(n) + 1}\n`))), "tlog_note_unverified");
    await tryWith(proofOnly((r) => (r.checkpoint = (r.checkpoint as string).replace(/\n\n[\s\S]*$/, "\n\n"))), "tlog_note_malformed");
    // The tlog-proof text alone is a receipt; edited, it is refused too.
    const proofFile = join(dir.path, "receipt.tlog-proof");
    writeFileSync(proofFile, original.tlog_proof as string);
    ok(await runCli(["log", "verify-inclusion", "--receipt", proofFile, "--key", logKey]));
    writeFileSync(proofFile, (original.tlog_proof as string).replace(/^extra (.*)$/m, (_m, e: string) => `extra ${flip(e)}`));
    refused(await runCli(["log", "verify-inclusion", "--receipt", proofFile, "--key", logKey]), "tlog_proof_invalid");
  });

  it("verify-consistency accepts the current tree against a kept checkpoint and refuses a forged one", async () => {
    const r = ok(await runCli(["log", "verify-consistency", "--from", oldCheckpoint, ...srv(), "--key", logKey]));
    expect(r.stdout).toMatch(/^ok: tree size \d+ -> \d+ is consistent/);
    const forged = join(dir.path, "forged.checkpoint");
    writeFileSync(forged, readFileSync(oldCheckpoint, "utf8").replace(/^(.*\n\d+\n)(.)/, (_m, head: string, c: string) => `${head}${c === "A" ? "B" : "A"}`));
    refused(await runCli(["log", "verify-consistency", "--from", forged, ...srv(), "--key", logKey]), "tlog_note_unverified");
  });

  it("log receipt fetches a receipt later, and refuses an index no checkpoint covers", async () => {
    const index = (JSON.parse(readFileSync(join(nodeDir, "receipt.json"), "utf8")) as { index: number }).index;
    const out = join(dir.path, "later.json");
    ok(await runCli(["log", "receipt", ...srv(), "--index", String(index), "--out", out, "--key", logKey]));
    ok(await runCli(["log", "verify-inclusion", "--receipt", out, "--key", logKey]));
    refused(await runCli(["log", "receipt", ...srv(), "--index", "999999999", "--out", out]), "tlog_not_covered");
    expect((await runCli(["log", "verify-inclusion", "--key", logKey])).code).toBe(2);
    expect((await runCli(["log", "receipt", ...srv(), "--index", "-1", "--out", out])).code).toBe(2);
  });

  it("attest with --receipt-wait 0 writes no receipt and says how to fetch it later", async () => {
    const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: "spiffe://example.org/node/cli-nowait", ttl_seconds: 600 })) as { token: string };
    const out = join(dir.path, "nowait");
    const r = ok(await runCli(["attest", ...srv(), "--join-token", token, "--out", out, "--receipt-wait", "0"]));
    expect(existsSync(join(out, "receipt.json"))).toBe(false);
    expect(r.stderr).toMatch(/fetch it later with: hallmark log receipt --server \S+ --index \d+ --out \S+receipt\.json/);
  });
});

