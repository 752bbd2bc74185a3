import { afterAll, describe, expect, it } from "vitest";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { HallmarkError } from "../../src/errors.js";
import { assertMechanisms, findMissingMechanisms, mechanismNeeds, readMechanisms } from "../../src/hsm/mechanisms.js";
import { acquireModule, findTokenSlot, pkcs11js, releaseModule } from "../../src/hsm/pkcs11-module.js";
import { findSoftHsmModule } from "../../src/hsm/softhsm.js";
import { runCli } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 8, "running it for real", item 4: the README's production example used to fail as
 * written (`hsm.pinFile` missing, then `no PKCS#11 token labelled 'hallmark'`). This test follows
 * the README's "Production setup" literally, with /etc/hallmark and /var/lib/hallmark moved
 * into a temporary directory, and starts `hallmark server` on it. Then the start-up mechanism
 * check against the real SoftHSM2 module's mechanism list.
 */
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const BIN = join(ROOT, "bin/hallmark.js");
const root = tempDir("production");
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  root.remove();
});

/** The README's "Production setup" section, its blocks by language, paths moved under the temp dir. */
function productionSection() {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const start = readme.indexOf("### Production setup");
  const end = readme.indexOf("### Backup and restore", start);
  expect(start).toBeGreaterThan(0);
  const moved = (text: string) => text.replaceAll("/etc/hallmark", join(root.path, "etc/hallmark")).replaceAll("/var/lib/hallmark", join(root.path, "var/lib/hallmark"));
  const section = moved(readme.slice(start, end));
  const blocks = (lang: string) => [...section.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g"))].map((m) => m[1]!);
  const shLines = blocks("sh").flatMap((b) => b.split("\n"));
  return { ini: blocks("ini")[0]!, yaml: blocks("yaml")[0]!, line: (word: string) => shLines.find((l) => l.includes(word))! };
}

/** `hallmark server` as its own process, as systemd runs it; resolves once it listens. */
async function startServerProcess(args: string[], env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [BIN, "server", ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
  children.push(child);
  const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
  let err = "";
  await new Promise<void>((ready, fail) => {
    child.stderr!.on("data", (b: Buffer) => {
      err += b.toString();
      if (err.includes("hallmark server listening")) ready();
    });
    child.once("exit", (code) => fail(new Error(`server exited with ${code}: ${err}`)));
  });
  return { child, exited };
}

describe("the README's production setup, followed literally", () => {
  const readme = productionSection();
  const initLine = readme.line("hallmark hsm init");
  const conf = /SOFTHSM2_CONF=(\S+)/.exec(initLine)![1]!;
  const env = { SOFTHSM2_CONF: conf, HALLMARK_HSM_PIN: "", HALLMARK_DATA_DIR: "" };
  const hsmInitArgs = initLine.slice(initLine.indexOf("hallmark hsm init") + "hallmark ".length).trim().split(/\s+/);
  const label = hsmInitArgs[hsmInitArgs.indexOf("--label") + 1]!;

  it("initialises the token the documented way and starts the server on the documented configuration", async () => {
    // The directories of the install line, then the SoftHSM2 configuration file.
    const install = readme.line("install -d");
    for (const d of install.split(/\s+/).filter((a) => a.startsWith(root.path))) mkdirSync(d, { recursive: true, mode: 0o700 });
    writeFileSync(conf, readme.ini);

    const init = await runCli(hsmInitArgs, env);
    expect(init.stderr).toBe("");
    expect(init.code).toBe(0);
    const pinFile = hsmInitArgs[hsmInitArgs.indexOf("--pin-file") + 1]!;
    const soPinFile = hsmInitArgs[hsmInitArgs.indexOf("--so-pin-file") + 1]!;
    for (const f of [pinFile, soPinFile]) expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(readFileSync(pinFile, "utf8").trim()).not.toBe(readFileSync(soPinFile, "utf8").trim());
    const tokens = /directories\.tokendir = (\S+)/.exec(readme.ini)![1]!;
    expect(readdirSync(tokens)).toHaveLength(1);

    const config = join(root.path, "etc/hallmark/server.yaml");
    writeFileSync(config, readme.yaml);
    expect(readme.yaml).toContain("softhsmAutoInit: false");
    const dataDir = join(root.path, "var/lib/hallmark");
    // Only the port changes (the flag beats the file): the test binds a free loopback port.
    const server = await startServerProcess(["--config", config, "--listen", "127.0.0.1:0"], env);
    try {
      const bundle = await runCli(["bundle", "show", "--data-dir", dataDir]);
      expect(bundle.code).toBe(0);
      expect(bundle.stdout).toMatch(/^-----BEGIN CERTIFICATE-----/);
      // The keys went into the initialised token; no development token was made beside the database.
      expect(existsSync(join(dataDir, "softhsm", "user.pin"))).toBe(false);
      expect(existsSync(join(dataDir, "hallmark.db"))).toBe(true);
    } finally {
      server.child.kill("SIGTERM");
    }
    expect(await server.exited).toBe(0);
  });

  it("refuses to initialise a label that exists, and changes nothing", async () => {
    const tokens = /directories\.tokendir = (\S+)/.exec(readme.ini)![1]!;
    const before = readdirSync(tokens);
    const again = await runCli(hsmInitArgs, env);
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toBe(`hallmark: hsm_token_exists: a token labelled '${label}' exists already; nothing was changed`);
    expect(readdirSync(tokens)).toEqual(before);
  });

  it("checks mechanisms against the real module: everything Hallmark uses is there; a need it cannot meet is named", () => {
    // This process has not loaded SoftHSM2 yet: it reads the README's configuration file.
    process.env.SOFTHSM2_CONF = conf;
    const pkcs11 = acquireModule(findSoftHsmModule());
    try {
      const slot = findTokenSlot(pkcs11, label)!;
      expect(slot).toBeDefined();
      const real = readMechanisms(pkcs11, slot);
      expect(real.size).toBeGreaterThan(10);
      const everyUse = mechanismNeeds([
        { purpose: "ca.keyType", keyType: "ec-p256", scheme: "ecdsa-sha256" },
        { purpose: "ca.keyType", keyType: "ec-p384", scheme: "ecdsa-sha384" },
        { purpose: "ca.keyType", keyType: "rsa-2048", scheme: "rsa-pkcs1-sha256" },
        { purpose: "jwt.keyType", keyType: "rsa-3072", scheme: "rsa-pss-sha256" },
      ]);
      expect(everyUse.map((n) => n.mechanism)).toContain(pkcs11js.CKM_ECDSA);
      expect(findMissingMechanisms(real, everyUse)).toEqual([]);

      const fake = 0x8000abcd;
      const impossible = [
        { mechanism: fake, flag: pkcs11js.CKF_SIGN, purpose: "test.fake" },
        { mechanism: pkcs11js.CKM_ECDSA, flag: pkcs11js.CKF_GENERATE_KEY_PAIR, purpose: "test.flag" },
        { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN, flag: pkcs11js.CKF_GENERATE_KEY_PAIR, modulusBits: 1 << 24, purpose: "test.size" },
      ];
      const missing = findMissingMechanisms(real, impossible);
      expect(missing).toHaveLength(3);
      expect(missing[0]).toBe("mechanism 0x8000abcd (signing) for test.fake");
      expect(missing[1]).toBe("CKM_ECDSA is not offered for key-pair generation for test.flag");
      expect(missing[2]).toMatch(/^CKM_RSA_PKCS_KEY_PAIR_GEN for 16777216-bit keys \(the token allows \d+-\d+\) for test\.size$/);

      // The start-up check turns them into one hsm_mechanism_missing error naming each.
      let thrown: unknown;
      try {
        assertMechanisms(pkcs11, slot, label, impossible);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(HallmarkError);
      expect((thrown as HallmarkError).code).toBe("hsm_mechanism_missing");
      expect((thrown as HallmarkError).message).toBe(`the PKCS#11 token '${label}' lacks ${missing.join("; ")}`);
      expect(() => assertMechanisms(pkcs11, slot, label, everyUse)).not.toThrow();
    } finally {
      releaseModule(pkcs11);
    }
  });
});
