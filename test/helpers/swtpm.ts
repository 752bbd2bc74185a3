import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { tempDir } from "./tmp.js";

const run = promisify(execFile);

export interface Swtpm {
  host: string;
  port: number;
  /** TPM2TOOLS_TCTI for tpm2-tools. */
  tcti: string;
  dir: string;
  /** The local CA: root and intermediate (issuer of the EK certificates). */
  rootCertPem: string;
  issuerCertPem: string;
  /** Runs a tpm2-tools command against this TPM, flushing transient objects after it (swtpm holds three). */
  tpm2(cmd: string, args: string[], opts?: { flush?: boolean }): Promise<string>;
  stop(): Promise<void>;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** A free loopback port P with P+1 free too: the swtpm TCTI always finds the control channel at P+1. */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const p = 20000 + 2 * Math.floor(Math.random() * 20000);
    if ((await portFree(p)) && (await portFree(p + 1))) return p;
  }
  throw new Error("no free port pair for swtpm");
}

/**
 * A fresh swtpm, manufactured by swtpm_setup with EK certificates (RSA 2048 at 0x81010001/NV
 * 0x01c00002, ECC P-384 at 0x81010016/NV 0x01c00016) from a local CA kept in a temporary
 * directory (never the machine-wide /var/lib/swtpm-localca), listening on a free loopback port.
 */
export async function startSwtpm(): Promise<Swtpm> {
  const tmp = tempDir("swtpm");
  const dir = tmp.path;
  const ca = join(dir, "ca");
  const state = join(dir, "state");
  mkdirSync(ca);
  mkdirSync(state);
  writeFileSync(join(ca, "swtpm-localca.conf"), `statedir = ${ca}\nsigningkey = ${ca}/signkey.pem\nissuercert = ${ca}/issuercert.pem\ncertserial = ${ca}/certserial\n`);
  writeFileSync(join(ca, "swtpm-localca.options"), "--platform-manufacturer Hallmark\n--platform-version 2.1\n--platform-model test\n");
  writeFileSync(
    join(dir, "swtpm_setup.conf"),
    `create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = ${ca}/swtpm-localca.conf\ncreate_certs_tool_options = ${ca}/swtpm-localca.options\nactive_pcr_banks = sha256\n`,
  );
  await run("swtpm_setup", ["--tpm2", "--tpmstate", state, "--config", join(dir, "swtpm_setup.conf"), "--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--overwrite"]);
  const port = await freePortPair();
  const ctrl = port + 1;
  const pidFile = join(dir, "swtpm.pid");
  await run("swtpm", [
    "socket", "--tpm2", "--tpmstate", `dir=${state}`,
    "--server", `type=tcp,port=${port},bindaddr=127.0.0.1`,
    "--ctrl", `type=tcp,port=${ctrl},bindaddr=127.0.0.1`,
    "--flags", "not-need-init,startup-clear", "--daemon", "--pid", `file=${pidFile}`,
  ]);
  const tcti = `swtpm:host=127.0.0.1,port=${port}`;
  const env = { ...process.env, TPM2TOOLS_TCTI: tcti };
  return {
    host: "127.0.0.1",
    port,
    tcti,
    dir,
    rootCertPem: readFileSync(join(ca, "swtpm-localca-rootca-cert.pem"), "utf8"),
    issuerCertPem: readFileSync(join(ca, "issuercert.pem"), "utf8"),
    async tpm2(cmd, args, opts = {}) {
      try {
        const { stdout } = await run(cmd, args, { env, cwd: dir, maxBuffer: 4 * 1024 * 1024 });
        return stdout;
      } finally {
        if (opts.flush !== false) {
          await run("tpm2_flushcontext", ["-t"], { env }).catch(() => undefined);
          await run("tpm2_flushcontext", ["-s"], { env }).catch(() => undefined);
        }
      }
    },
    async stop() {
      await run("swtpm_ioctl", ["--tcp", `127.0.0.1:${ctrl}`, "-s"]).catch(() => undefined);
      tmp.remove();
    },
  };
}
