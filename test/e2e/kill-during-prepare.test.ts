import { afterAll, describe, expect, it } from "vitest";
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openPkcs11KeyStore } from "../../src/hsm/pkcs11-keystore.js";
import { CA_KEY_KINDS } from "../../src/service/ports.js";
import { ensureSoftHsmToken } from "../../src/hsm/softhsm.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { Store } from "../../src/store/types.js";
import { runCli } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Issue 7 item 8b, for real: the server is killed with SIGKILL while `ca rotate --step prepare`
 * is creating a key. The CA key is RSA-2048 so that generation inside SoftHSM takes long enough
 * for the kill to land inside the creation (the pending record is visible by then).
 */
const BIN = fileURLToPath(new URL("../../bin/hallmark.js", import.meta.url));
const data = tempDir("kill-prepare");
const config = join(data.path, "hallmark.yaml");
const children: ChildProcess[] = [];
let store: Store | undefined;
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await store?.close();
  data.remove();
});

/** `hallmark server` as its own process; resolves once it listens. Its log (stdout) is kept. */
async function startServerProcess(): Promise<{ child: ChildProcess; log: () => string; exited: Promise<void> }> {
  const child = spawn(process.execPath, [BIN, "server", "--config", config, "--data-dir", data.path, "--listen", "127.0.0.1:0"], {
    env: { ...process.env, HALLMARK_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let out = "";
  let err = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  await new Promise<void>((ready, fail) => {
    child.stderr!.on("data", (b: Buffer) => {
      err += b.toString();
      if (err.includes("hallmark server listening")) ready();
    });
    child.once("exit", (code) => fail(new Error(`server exited with ${code}: ${err}`)));
  });
  return { child, log: () => out, exited };
}

const logLines = (text: string) => text.split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

describe("kill -9 during `ca rotate --step prepare`", () => {
  it("restarts clean: leftovers destroyed, pending record discarded, and prepare works again", async () => {
    writeFileSync(config, "ca:\n  keyType: rsa-2048\n");
    const first = await startServerProcess();
    store = await openSqliteStore(join(data.path, "hallmark.db"));

    const prepare = runCli(["ca", "rotate", "--step", "prepare", "--data-dir", data.path]);
    let settled = false;
    void prepare.then(() => (settled = true));
    // Kill as soon as the intent is recorded: SoftHSM is then generating the RSA key.
    while (!settled && (await store.caKeys.listPending()).length === 0) await new Promise((r) => setTimeout(r, 2));
    first.child.kill("SIGKILL");
    await first.exited;
    const interrupted = await store.caKeys.listPending();
    expect((await prepare).code).not.toBe(0);
    // The kill landed inside the creation (otherwise this run proved nothing).
    expect(interrupted).toHaveLength(1);

    const second = await startServerProcess();
    const again = await runCli(["ca", "rotate", "--step", "prepare", "--data-dir", data.path]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^prepared x509 key /);
    second.child.kill("SIGTERM");
    await second.exited;

    const lines = logLines(second.log());
    expect(lines.filter((l) => l.msg === "discarded the record of an interrupted CA key creation").map((l) => l.label)).toEqual([interrupted[0]!.label]);
    // Whatever half or whole pair SoftHSM had written under that label was destroyed, each object logged.
    for (const l of lines.filter((x) => x.msg === "destroyed a leftover CA key object in the HSM")) expect(l.label).toBe(interrupted[0]!.label);
    expect(await store.caKeys.listPending()).toEqual([]);

    // The token holds exactly the keys the database records as published: no leftover under our prefixes.
    const published = (await store.caKeys.list()).filter((k) => k.status !== "retired").map((k) => k.label);
    expect(published).toHaveLength(5); // the active x509, jwt, wit and token keys, and the x509 key prepared again
    const pin = readFileSync(join(data.path, "softhsm", "user.pin"), "utf8").trim();
    const { modulePath } = await ensureSoftHsmToken({ dir: join(data.path, "softhsm"), label: "hallmark", requiredBecause: "the test just used it" });
    const ks = await openPkcs11KeyStore({ modulePath, tokenLabel: "hallmark", pin, sessions: 1 });
    try {
      const objects = (await Promise.all(CA_KEY_KINDS.map((kind) => ks.listKeyObjects(`hallmark-${kind}-`)))).flat();
      expect(objects.map((o) => `${o.label} ${o.objectClass}`).sort()).toEqual(published.flatMap((l) => [`${l} private-key`, `${l} public-key`]).sort());
    } finally {
      await ks.close();
    }
  });
});
