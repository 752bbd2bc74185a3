import { chmodSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Writes one file atomically (temp file, then rename) so a reader never sees half an SVID,
 * with the mode set at creation: a private key is never world-readable, not even briefly.
 */
export function writeFileAtomic(path: string, content: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode, flag: "w" });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

/** svid.pem (leaf first, then intermediates), svid.key (0600), bundle.pem. */
export function writeSvidFiles(
  dir: string,
  files: { certChainPem: string; privateKeyPem?: string | undefined; keyFiles?: Record<string, string> | undefined; bundlePem: string },
): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (files.privateKeyPem !== undefined) writeFileAtomic(join(dir, "svid.key"), files.privateKeyPem, 0o600);
  for (const [name, content] of Object.entries(files.keyFiles ?? {})) writeFileAtomic(join(dir, name), content, 0o600);
  writeFileAtomic(join(dir, "svid.pem"), files.certChainPem, 0o644);
  writeFileAtomic(join(dir, "bundle.pem"), files.bundlePem, 0o644);
}
