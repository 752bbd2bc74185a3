import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { adminRequest, expectOk } from "../../../src/client/http.js";
import { openSqliteStore } from "../../../src/store/sqlite/index.js";
import { runCli } from "../../helpers/cli.js";
import { SHARED_FIXTURES, haveSharedFixtures, warnIfNoSharedFixtures } from "../../helpers/fixtures.js";
import { startTestServer, type TestServer } from "../../helpers/server.js";
import { tempDir } from "../../helpers/tmp.js";

let server: TestServer;
const work = tempDir("nitro-cli");

beforeAll(async () => {
  // The default configuration: the real AWS Nitro root, pinned by fingerprint.
  server = await startTestServer({ overrides: { attestors: { aws_nitro: {} } } });
  writeFileSync(join(work.path, "bundle.pem"), (expectOk(await adminRequest(server.adminSocket, "GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem);
});
afterAll(async () => {
  await server?.destroy();
  work.remove();
});

describe("hallmark attest --attestor aws_nitro --evidence-cmd", () => {
  warnIfNoSharedFixtures("the Nitro CLI test (it replays a real document)");
  it.skipIf(!haveSharedFixtures)("runs the command, sends its document, and reports the server's refusal of a replayed old document in one line, audited", async () => {
    const doc = `${SHARED_FIXTURES}aws-nitro/evervault-beta-valid-attestation-doc.bin`;
    const r = await runCli(["attest", "--server", server.url, "--trust-bundle", join(work.path, "bundle.pem"), "--attestor", "aws_nitro", "--evidence-cmd", `test -n "$HALLMARK_NONCE_HEX" && test -s "$HALLMARK_PUBLIC_KEY_FILE" && cat '${doc}'`, "--out", join(work.path, "out")]);
    expect(r.code).toBe(1);
    // The real document verifies (chain at its own time, signature), then is refused as stale.
    expect(r.stderr.trim()).toMatch(/^hallmark: nitro_document_stale: /);
    const store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
    try {
      const records = await store.audit.list(0, 1000);
      expect(records.some((x) => x.outcome === "refused" && x.code === "nitro_document_stale" && x.attestor === "aws_nitro")).toBe(true);
    } finally {
      await store.close();
    }
  });

  it("says in one line what a Nitro client needs", async () => {
    const r = await runCli(["attest", "--server", server.url, "--attestor", "aws_nitro", "--out", join(work.path, "x")]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/aws_nitro needs --evidence-cmd CMD or --evidence-file FILE/);
  });
});
