import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { adminCommands } from "../../src/cli/admin-commands.js";
import { clientCommands } from "../../src/cli/client-commands.js";
import { commandHelp } from "../../src/cli/help.js";
import { serverCommand } from "../../src/cli/server-command.js";
import { ENV_OVERRIDES } from "../../src/config/server.js";
import { softHsmAutoInitInUse } from "../../src/server/dev-notice.js";
import { type CliResult, otherUserCliUnavailable, run, runCli } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 8, the first week of an operator: help that says what each flag means, its default and
 * its environment variable; user mistakes answered in words (never `internal error:`); and the
 * development-default notice on the server's stderr. Everything runs the built CLI.
 */

const work = tempDir("cli-help");
afterAll(() => work.remove());
const COMMANDS = [serverCommand, ...adminCommands, ...clientCommands];
const GROUPS = ["token", "entry", "node", "ca"];
const lines = (r: CliResult) => r.stderr.trim().split("\n");
/** Help text with its wrapping undone, so a check does not depend on where a line breaks. */
const flat = (s: string) => s.replace(/\s+/g, " ");

describe("help", () => {
  it("documents every flag of every command, with its default and environment variable, from the flag's own definition", () => {
    for (const cmd of COMMANDS) {
      const help = flat(commandHelp(cmd));
      for (const [name, flag] of Object.entries(cmd.options)) {
        expect(flag.description.length, `${cmd.name} --${name} has no description`).toBeGreaterThan(10);
        expect(help).toContain(`--${name}`);
        expect(help).toContain(flat(flag.description));
        if (flag.default !== undefined) expect(help).toContain(`default: ${flat(flag.default)}`);
        if (flag.env) expect(help).toContain(`env: ${flag.env}`);
      }
    }
  });

  it("prints a command's options with their defaults and environment variables, for '--help' and 'hallmark help VERB' alike", async () => {
    const [server, entry, attest, helpEntry] = await Promise.all([
      runCli(["server", "--help"]),
      runCli(["entry", "create", "--help"]),
      runCli(["attest", "--help"]),
      runCli(["help", "entry", "create"]),
    ]);
    for (const r of [server, entry, attest, helpEntry]) expect(r.code).toBe(0);
    expect(helpEntry.stdout).toBe(entry.stdout);
    // Every environment variable the server reads, and the defaults the schema applies.
    for (const env of [...Object.keys(ENV_OVERRIDES), "HALLMARK_HSM_PIN"]) expect(server.stdout).toMatch(new RegExp(`\\n  ${env} +\\S`));
    expect(flat(server.stdout)).toMatch(/--listen HOST:PORT HTTPS address [^-]*\(default: 127\.0\.0\.1:8443; env: HALLMARK_LISTEN\)/);
    expect(flat(server.stdout)).toMatch(/--data-dir DIR [^-]*\(default: \.data; env: HALLMARK_DATA_DIR\)/);
    // Admin commands find the server through --data-dir / HALLMARK_DATA_DIR / --admin-socket.
    expect(flat(entry.stdout)).toMatch(/--data-dir DIR [^-]*\(default: \.data; env: HALLMARK_DATA_DIR\)/);
    expect(entry.stdout).toContain("--admin-socket PATH");
    expect(flat(entry.stdout)).toMatch(/--x509-ttl DURATION lifetime of X\.509-SVIDs for this entry \(default: the server's svid\.x509Ttl/);
    // Flags that existed undocumented: --server-id is documented; --admin (a no-op) is gone.
    expect(flat(attest.stdout)).toContain(
      "--server-id ID the SPIFFE ID the server's certificate must carry as a URI SAN (default: any SPIFFE ID with the path /hallmark/server",
    );
    expect(entry.stdout).not.toContain("--admin ");
    const admin = await runCli(["entry", "create", "--admin", "--parent-id", "spiffe://example.org/n", "--spiffe-id", "spiffe://example.org/w"]);
    expect(admin.code).toBe(2);
    expect(admin.stderr).toMatch(/^hallmark: Unknown option '--admin'/);
  });

  it("lists a group's subcommands for 'hallmark GROUP --help' and 'hallmark help GROUP'", async () => {
    const groups = await Promise.all(GROUPS.map((g) => runCli([g, "--help"])));
    groups.forEach((r, i) => {
      expect(r.code, r.stderr).toBe(0);
      const subs = COMMANDS.filter((c) => c.name.startsWith(`${GROUPS[i]} `));
      expect(subs.length).toBeGreaterThan(0);
      for (const cmd of subs) expect(r.stdout).toMatch(new RegExp(`\\n  ${cmd.name.split(" ")[1]} +${cmd.summary.split(" ")[0]} `));
    });
    // A group without a subcommand, or with a wrong one, is a usage error that lists the right ones.
    const [helpCa, bare, wrong, unknown] = await Promise.all([runCli(["help", "ca"]), runCli(["node"]), runCli(["node", "kick"]), runCli(["help", "nope"])]);
    expect(helpCa.code).toBe(0);
    expect(helpCa.stdout).toBe(groups[GROUPS.indexOf("ca")]!.stdout);
    for (const r of [bare, wrong, unknown]) {
      expect(r.code).toBe(2);
      expect(lines(r)).toHaveLength(1);
    }
    expect(bare.stderr).toMatch(/'node' needs a subcommand; try: node list, node evict, node ban, node unban/);
    expect(wrong.stderr).toMatch(/'node kick' is not a command; try: node list/);
  });
});

describe("errors an operator makes", () => {
  it("prints a bad config file one line per field, each 'hallmark: config_invalid: file: field: why'", async () => {
    const file = join(work.path, "bad.yaml");
    writeFileSync(file, "trustDomain: 'Not A Domain!'\nlisten: nowhere\nca: { ttl: 1x }\n");
    const r = await runCli(["server", "--config", file, "--data-dir", join(work.path, "never")]);
    expect(r.code).toBe(1);
    const out = lines(r);
    expect(out).toHaveLength(3);
    for (const l of out) expect(l).toMatch(new RegExp(`^hallmark: config_invalid: ${file}: (trustDomain|listen|ca\\.ttl): \\S`));
    expect(new Set(out.map((l) => l.split(": ")[3])).size).toBe(3);
  });

  it("answers --server without a scheme as a usage error with the URL it meant", async () => {
    const [fetch, attest, http] = await Promise.all([
      runCli(["fetch", "x509", "--server", "127.0.0.1:8443", "--svid", "s", "--key", "k", "--trust-bundle", "b", "--out", "o"]),
      runCli(["attest", "--server", "localhost:8443", "--join-token", "t", "--out", "o"]),
      runCli(["renew", "--server", "http://127.0.0.1:8443", "--svid", "s", "--key", "k", "--trust-bundle", "b", "--out", "o"]),
    ]);
    for (const r of [fetch, attest, http]) {
      expect(r.code).toBe(2);
      expect(lines(r)).toHaveLength(1);
    }
    expect(fetch.stderr).toContain("did you mean https://127.0.0.1:8443?");
    expect(attest.stderr).toContain("did you mean https://localhost:8443?");
    expect(http.stderr).toContain("did you mean https://127.0.0.1:8443?");
  });

  it("says in words when the key does not belong to the SVID, before any TLS", async () => {
    const cert = join(work.path, "svid.pem");
    const key = join(work.path, "svid.key");
    const other = join(work.path, "other.key");
    const made = await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-subj", "/O=t", "-days", "1"]);
    expect(made.code, made.stderr).toBe(0);
    expect((await run("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", other])).code).toBe(0);
    writeFileSync(join(work.path, "not-a-key"), "hello\n");
    // Port 9 on loopback: nothing listens, so a pair that passes the check fails on connecting.
    const fetch = (k: string) => runCli(["fetch", "x509", "--server", "https://127.0.0.1:9", "--svid", cert, "--key", k, "--trust-bundle", cert, "--out", join(work.path, "o")]);
    const [mismatch, garbage, good, noBundle] = await Promise.all([
      fetch(other),
      fetch(join(work.path, "not-a-key")),
      fetch(key),
      runCli(["fetch", "x509", "--server", "https://127.0.0.1:9", "--svid", cert, "--key", key, "--trust-bundle", join(work.path, "not-a-key"), "--out", "o"]),
    ]);
    expect(noBundle.code).toBe(1);
    expect(noBundle.stderr).toMatch(/^hallmark: bundle_malformed: --trust-bundle .*not-a-key holds no PEM certificate/);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr.trim()).toBe(
      `hallmark: svid_key_mismatch: --key ${other} is not the private key of --svid ${cert}: give the svid.key written together with that svid.pem`,
    );
    expect(garbage.code).toBe(1);
    expect(garbage.stderr).toMatch(/^hallmark: svid_unreadable: --key .*not-a-key is not a PEM private key/);
    expect(good.stderr).toMatch(/^hallmark: unavailable: cannot reach the server/);
    for (const r of [mismatch, garbage, good]) expect(r.stderr).not.toMatch(/internal error|error:[0-9A-F]{8}/);
  });

  it("gives every missing input file the same exit (1) and a line naming the flag and the path", async () => {
    const missing = join(work.path, "missing");
    const pem = join(work.path, "svid.pem");
    const dir = join(work.path, "a-directory");
    mkdirSync(dir, { recursive: true });
    const node = (svid: string, key: string, bundle: string) => ["fetch", "x509", "--server", "https://127.0.0.1:9", "--svid", svid, "--key", key, "--trust-bundle", bundle, "--out", "o"];
    const cases: Array<[string, string[], string]> = [
      ["--svid", node(missing, pem, pem), "no such file"],
      ["--key", node(pem, missing, pem), "no such file"],
      ["--trust-bundle", node(pem, pem, missing), "no such file"],
      ["--trust-bundle", ["attest", "--server", "https://127.0.0.1:9", "--trust-bundle", missing, "--join-token", "t", "--out", "o"], "no such file"],
      ["--evidence-file", ["attest", "--server", "https://127.0.0.1:9", "--trust-bundle", pem, "--attestor", "aws_nitro", "--evidence-file", missing, "--out", "o"], "no such file"],
      ["--vcek", ["attest", "--server", "https://127.0.0.1:9", "--trust-bundle", pem, "--attestor", "amd_sev_snp", "--evidence-file", pem, "--vcek", missing, "--out", "o"], "no such file"],
      ["--config", ["server", "--config", missing], "no such file"],
      ["--checkpoint", ["audit", "verify", "--checkpoint", dir, "--data-dir", work.path], "it is a directory"],
    ];
    const results = await Promise.all(cases.map(([, args]) => runCli(args)));
    results.forEach((r, i) => {
      const [flag, , why] = cases[i]!;
      const path = flag === "--checkpoint" ? dir : missing;
      expect(r.code, `${flag}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toBe(`hallmark: file_unreadable: ${flag}: cannot read ${path}: ${why}\n`);
    });
  });

  describe("the admin socket", () => {
    it("names the socket it tried and how to point at the server when there is none", async () => {
      const empty = join(work.path, "no-server");
      const [flag, env] = await Promise.all([runCli(["entry", "list", "--data-dir", empty]), runCli(["node", "list"], { HALLMARK_DATA_DIR: empty })]);
      for (const r of [flag, env]) {
        expect(r.code).toBe(1);
        expect(lines(r)).toHaveLength(1);
        expect(r.stderr).toMatch(new RegExp(`^hallmark: unavailable: no admin socket at ${empty}/admin\\.sock: `));
        for (const hint of ["--data-dir DIR", "HALLMARK_DATA_DIR", "--admin-socket PATH"]) expect(r.stderr).toContain(hint);
      }
    });

    it("says the server has stopped when the socket file is left over", async () => {
      const dir = join(work.path, "stale");
      mkdirSync(dir);
      await leaveStaleSocket(join(dir, "admin.sock"));
      const r = await runCli(["ca", "show", "--data-dir", dir]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^hallmark: unavailable: nothing answers on the admin socket .*stale\/admin\.sock: the server has stopped/);
      expect(lines(r)).toHaveLength(1);
    });

    it("says who may administer when the socket is not the caller's", async (ctx) => {
      const unavailable = process.getuid?.() === 0 ? otherUserCliUnavailable() : undefined;
      if (unavailable) {
        console.warn(`skipping: ${unavailable}`);
        ctx.skip();
      }
      const dir = join(work.path, "not-mine");
      mkdirSync(dir);
      chmodSync(work.path, 0o755);
      chmodSync(dir, 0o755);
      const socket = join(dir, "admin.sock");
      await leaveStaleSocket(socket);
      chmodSync(socket, 0o600);
      // root opens any socket: run the CLI as nobody; anyone else is denied a mode-000 socket.
      const asRoot = process.getuid?.() === 0;
      if (!asRoot) chmodSync(socket, 0);
      const args = ["entry", "list", "--admin-socket", socket];
      const r = await runCli(args, {}, asRoot ? { uid: 65534, gid: 65534 } : {});
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/^hallmark: admin_required: permission denied on the admin socket .*: only the user the server runs as may administer it/);
    });
  });
});

describe("the development-default notice", () => {
  it("is printed on stderr by 'hallmark server' when it creates its own SoftHSM2 token", async () => {
    const dataDir = join(work.path, "server");
    const child = spawn(process.execPath, [fileURLToPath(new URL("../../bin/hallmark.js", import.meta.url)), "server", "--data-dir", dataDir, "--listen", "127.0.0.1:0"], {
      env: { ...process.env, HALLMARK_LOG_LEVEL: "error" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    const stderr = await readUntil(child, /hallmark server listening on/);
    child.kill("SIGTERM");
    const code = await new Promise<number | null>((done) => child.once("exit", (c) => done(c)));
    expect(code).toBe(0);
    const notice = stderr.slice(0, stderr.indexOf("hallmark server listening on"));
    expect(notice).toContain("DEVELOPMENT DEFAULT: the CA and JWT signing keys are in a SoftHSM2 token");
    expect(notice).toContain(`${dataDir}/softhsm`);
    for (const what of ["hsm.modulePath", "HALLMARK_HSM_MODULE", "hsm.pinFile", "HALLMARK_HSM_PIN", "hsm.softhsmAutoInit: false"]) expect(notice).toContain(what);
    expect(notice.split("\n").length).toBeGreaterThan(5);
  });

  it("is not due with a real PKCS#11 module configured", () => {
    const hsm = { tokenLabel: "t", pinEnv: "P", softhsmAutoInit: true, sessions: 1, signing: "auto" as const, sessionCopies: "auto" as const };
    expect(softHsmAutoInitInUse({ hsm })).toBe(true);
    expect(softHsmAutoInitInUse({ hsm: { ...hsm, modulePath: "/opt/hsm/lib.so" } })).toBe(false);
    expect(softHsmAutoInitInUse({ hsm: { ...hsm, softhsmAutoInit: false } })).toBe(false);
  });
});

/** A socket file with nothing behind it, as a killed server leaves: its process is SIGKILLed. */
async function leaveStaleSocket(path: string): Promise<void> {
  const child = spawn(process.execPath, ["-e", `require("node:net").createServer().listen(${JSON.stringify(path)}, () => console.log("up"))`], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((done) => child.stdout!.once("data", () => done()));
  child.kill("SIGKILL");
  await new Promise((done) => child.once("exit", done));
}

function readUntil(child: ChildProcess, marker: RegExp): Promise<string> {
  return new Promise((done, fail) => {
    let text = "";
    child.stderr!.on("data", (c: Buffer) => {
      text += c.toString("utf8");
      if (marker.test(text)) done(text);
    });
    child.once("exit", (code) => fail(new Error(`server exited (${code}) before it was ready: ${text}`)));
  });
}
