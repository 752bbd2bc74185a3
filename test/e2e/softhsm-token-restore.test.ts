import { afterAll, describe, expect, it } from "vitest";
import { cpSync, existsSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { runCli } from "../helpers/cli.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 7 item 8a: a start whose SoftHSM token has vanished used to create a new, empty token
 * under the same label, so the start failed and restoring the backup failed too (two tokens, one
 * label, the empty one found first). Now the start refuses, names the directory to restore, and
 * creates nothing; the restored token brings back the same CA.
 */
const data = tempDir("token-restore");
const backups = tempDir("token-backup");
const tokens = join(data.path, "softhsm", "tokens");
let server: TestServer | undefined;
afterAll(async () => {
  await server?.close();
  data.remove();
  backups.remove();
});

const bundleOf = async (s: TestServer) => (expectOk(await adminRequest(s.adminSocket, "GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
const refusal = `hallmark: hsm_token_not_found: SoftHSM2 token 'hallmark' is not in ${tokens}, but the database records CA keys in it: restore ${tokens} from your backup and start again (nothing was created)`;

async function startRefused(): Promise<void> {
  const r = await runCli(["server", "--data-dir", data.path, "--listen", "127.0.0.1:0"], { HALLMARK_LOG_LEVEL: "silent" });
  expect(r.code).toBe(1);
  expect(r.stderr.trim()).toBe(refusal);
}

describe("a SoftHSM token directory that vanished", () => {
  let before = "";

  it("refuses to start without the tokens directory, creates nothing, and starts with the same CA once it is restored", async () => {
    server = await startTestServer({ dataDir: data.path });
    before = await bundleOf(server);
    await server.close();
    server = undefined;
    const backup = join(backups.path, "tokens");
    cpSync(tokens, backup, { recursive: true });
    rmSync(tokens, { recursive: true });

    await startRefused();
    expect(existsSync(tokens)).toBe(false);
    // In process too, with the same code (and a second refusal leaves nothing behind either).
    await expect(startTestServer({ dataDir: data.path })).rejects.toMatchObject({ code: "hsm_token_not_found" });
    expect(existsSync(tokens)).toBe(false);

    cpSync(backup, tokens, { recursive: true });
    server = await startTestServer({ dataDir: data.path });
    expect(await bundleOf(server)).toBe(before);
    await server.close();
    server = undefined;
  });

  it("refuses when only the token's own directory is gone, leaves tokens/ empty, and starts again once it is put back", async () => {
    const [tokenDir, ...others] = readdirSync(tokens);
    expect(others).toEqual([]);
    const moved = join(backups.path, tokenDir!);
    renameSync(join(tokens, tokenDir!), moved);

    await startRefused();
    expect(readdirSync(tokens)).toEqual([]);

    renameSync(moved, join(tokens, tokenDir!));
    server = await startTestServer({ dataDir: data.path });
    expect(await bundleOf(server)).toBe(before);
  });

});
