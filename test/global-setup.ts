import { spawnSync } from "node:child_process";

/**
 * The CLI tests run the built `hallmark` (bin/hallmark.js → dist/), as a user would: build once
 * before any test file starts, so a stale dist/ is never what is tested. Type errors are the
 * typecheck step's business (tsc still emits); only a build that emits nothing stops the run.
 */
export default function setup(): void {
  const r = spawnSync("npx", ["--no-install", "tsc", "-p", "tsconfig.build.json"], { encoding: "utf8" });
  if (r.error) throw r.error;
}
