import { chmodSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { HallmarkError } from "../errors.js";
import { TrustDomain } from "../spiffe/id.js";

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

/**
 * DIR/federated/<trust domain>.pem for each foreign bundle (issue 14). The names come from the
 * server; each must be a valid trust domain, never a path (".." and "." are refused).
 */
export function writeFederatedBundles(dir: string, bundles: Record<string, string>): string[] {
  const names = Object.keys(bundles).map((n) => TrustDomain.parse(n).name);
  if (names.length === 0) return [];
  for (const n of names) if (/^\.+$/.test(n)) throw new HallmarkError("invalid_trust_domain", `the server named a federated trust domain '${n}', which is not a file name`);
  const sub = join(dir, "federated");
  mkdirSync(sub, { recursive: true, mode: 0o755 });
  for (const n of names) writeFileAtomic(join(sub, `${n}.pem`), bundles[n]!, 0o644);
  return names;
}
