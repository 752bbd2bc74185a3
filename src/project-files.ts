import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * A file shipped with Hallmark (fixtures/…), found from this module whether it runs from src/
 * (tests) or dist/src/ (the built CLI).
 */
export function shippedFile(relative: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, relative))) return join(dir, relative);
    dir = dirname(dir);
  }
  return join(dirname(fileURLToPath(import.meta.url)), "..", relative);
}
