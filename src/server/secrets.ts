import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { writeFileAtomic } from "../client/files.js";
import { HallmarkError } from "../errors.js";

/** Reads a secret from a file (trimmed); the path may be named in errors, the content never. */
export function readSecretFile(path: string, what: string): string {
  let value: string;
  try {
    value = readFileSync(path, "utf8").trim();
  } catch {
    throw new HallmarkError("config_invalid", `${what}: cannot read ${path}`);
  }
  if (!value) throw new HallmarkError("config_invalid", `${what}: ${path} is empty`);
  return value;
}

/**
 * Development only: a secret generated on first start and kept in a 0600 file, so that the
 * quick start needs no PIN. Real deployments give the PIN through a file or the environment.
 */
export function generatedSecretFile(path: string): string {
  if (existsSync(path)) return readSecretFile(path, "generated secret");
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const value = randomBytes(16).toString("hex");
  writeFileAtomic(path, `${value}\n`, 0o600);
  return value;
}
