import { execFile } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { HallmarkError } from "../errors.js";

const run = promisify(execFile);

const MODULE_CANDIDATES = [
  "/usr/lib/softhsm/libsofthsm2.so",
  "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
  "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
  "/usr/local/lib/softhsm/libsofthsm2.so",
];

export function findSoftHsmModule(): string {
  const found = MODULE_CANDIDATES.find((p) => existsSync(p));
  if (!found) throw new HallmarkError("hsm_module_not_found", "SoftHSM2 is not installed (no libsofthsm2.so); run scripts/install-deps.sh");
  return found;
}

/**
 * Development and tests only: a SoftHSM2 token in a directory of our own. Writes
 * <dir>/softhsm2.conf, points SOFTHSM2_CONF at it (SoftHSM reads it at C_Initialize, once per
 * process), and initialises a token labelled `label` unless one exists. The PINs go to
 * softhsm2-util on its command line, visible to local `ps` for the 15 ms it runs: acceptable for
 * a development token, never used with a real HSM.
 */
export async function ensureSoftHsmToken(opts: { dir: string; label: string; pin: string; soPin: string }): Promise<{ confPath: string; modulePath: string }> {
  const tokens = join(opts.dir, "tokens");
  mkdirSync(tokens, { recursive: true, mode: 0o700 });
  const confPath = join(opts.dir, "softhsm2.conf");
  writeFileSync(confPath, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`, { mode: 0o600 });
  process.env.SOFTHSM2_CONF = confPath;
  const modulePath = findSoftHsmModule();
  const env = { ...process.env, SOFTHSM2_CONF: confPath };
  let listing: string;
  try {
    listing = (await run("softhsm2-util", ["--show-slots"], { env })).stdout;
  } catch (e) {
    throw new HallmarkError("hsm_module_not_found", "softhsm2-util failed; is softhsm2 installed?", { cause: e });
  }
  const labels = [...listing.matchAll(/^\s*Label:\s*(.*?)\s*$/gm)].map((m) => m[1]);
  if (!labels.includes(opts.label)) {
    try {
      await run("softhsm2-util", ["--init-token", "--free", "--label", opts.label, "--pin", opts.pin, "--so-pin", opts.soPin], { env });
    } catch (e) {
      // The error text of softhsm2-util never contains the PIN; the argv is not logged.
      throw new HallmarkError("hsm_error", `softhsm2-util could not initialise token '${opts.label}'`, {
        internal: (e as { stderr?: string }).stderr?.trim(),
      });
    }
  }
  return { confPath, modulePath };
}
