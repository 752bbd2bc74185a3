import { resolve } from "node:path";
import { adminDownload } from "../client/admin-download.js";
import { ADMIN_OPTIONS, socketOf } from "./admin-commands.js";
import { type Command, optionalString, requireString } from "./args.js";

/** Operating a deployment: backups of the running server's database, and HSM token set-up. */
export const opsCommands: Command[] = [
  {
    name: "backup",
    summary: "write a consistent copy of the running server's database to FILE (0600; keep the HSM token and PIN files too)",
    options: {
      ...ADMIN_OPTIONS,
      out: { type: "string", value: "FILE", required: true, description: "where to write the copy (mode 0600, written atomically)" },
      force: { type: "boolean", description: "replace FILE if it exists (default: refuse with backup_exists)" },
    },
    async run(v) {
      const out = resolve(requireString(v, "out"));
      const r = await adminDownload(socketOf(v), "/admin/backup", out, { force: v.force === true });
      console.log(v.json ? JSON.stringify({ out, ...r }, null, 2) : `backup written to ${out} (${r.bytes} bytes, sha256 ${r.sha256})`);
      return 0;
    },
  },
  {
    name: "hsm init",
    summary: "initialise a token in SoftHSM2 (not a vendor HSM) with PINs read from files (created with random PINs, 0600, when absent)",
    options: {
      module: { type: "string", value: "PATH", description: "the SoftHSM2 PKCS#11 module", default: "the first libsofthsm2.so found in the usual places" },
      label: { type: "string", value: "LABEL", required: true, description: "the token label (hsm.tokenLabel in the server config)" },
      "pin-file": { type: "string", value: "FILE", required: true, description: "the user PIN (hsm.pinFile); created with a random PIN when absent" },
      "so-pin-file": { type: "string", value: "FILE", required: true, description: "the security officer PIN; created with a random PIN when absent" },
    },
    async run(v) {
      const label = requireString(v, "label");
      const pinFile = requireString(v, "pin-file");
      const soPinFile = requireString(v, "so-pin-file");
      // Loaded only here: other commands never load a PKCS#11 module.
      const { findSoftHsmModule, initSoftHsmToken } = await import("../hsm/softhsm.js");
      const { generatedSecretFile } = await import("../server/secrets.js");
      const modulePath = optionalString(v, "module") ?? findSoftHsmModule();
      initSoftHsmToken({ modulePath, label, pin: generatedSecretFile(pinFile), soPin: generatedSecretFile(soPinFile) });
      console.log(`token '${label}' initialised in ${modulePath}; user PIN in ${pinFile}, SO PIN in ${soPinFile}`);
      return 0;
    },
  },
];
