import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

/** `hallmark agent`: its usage errors (exit 2, one line). The agent at work: test/e2e/agent-workload-api.test.ts. */
const dir = tempDir("agent-cli");
const bundle = join(dir.path, "bundle.pem");
afterAll(() => dir.remove());

describe("hallmark agent", () => {
  const base = ["agent", "--server", "https://127.0.0.1:1", "--trust-bundle", bundle, "--data-dir", join(dir.path, "data"), "--socket", join(dir.path, "agent.sock")];

  it("refuses bad flags with one line and exit 2", async () => {
    const noServer = await runCli(["agent", "--join-token", "t"]);
    expect(noServer.code).toBe(2);
    expect(noServer.stderr.trim()).toBe("hallmark: --server is required (see 'hallmark agent --help')");
    writeFileSync(bundle, "");
    const noBundle = await runCli([...base, "--join-token", "t"]);
    expect(noBundle.code).toBe(1);
    expect(noBundle.stderr).toMatch(/^hallmark: bundle_malformed: /);
    writeFileSync(bundle, "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n");
    const noAttestor = await runCli(base);
    expect(noAttestor.code).toBe(2);
    expect(noAttestor.stderr).toMatch(/--attestor is required/);
    const poll = await runCli([...base, "--join-token", "t", "--poll-interval", "soon"]);
    expect(poll.code).toBe(2);
    expect(poll.stderr).toMatch(/--poll-interval 'soon' is not a duration/);
  });
});
