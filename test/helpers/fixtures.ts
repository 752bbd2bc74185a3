import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** ../shared/fixtures beside the repository: present on our machines and in CI, absent in a user's own clone. */
export const SHARED_FIXTURES = fileURLToPath(new URL("../../../shared/fixtures/real/", import.meta.url));
export const haveSharedFixtures = existsSync(SHARED_FIXTURES);

export function sharedFixture(relative: string): Buffer {
  return readFileSync(`${SHARED_FIXTURES}${relative}`);
}

/** Call at the top of a describe that needs the shared fixtures: says why it skips when they are absent. */
export function warnIfNoSharedFixtures(what: string): void {
  if (!haveSharedFixtures) console.warn(`skipping ${what}: ${SHARED_FIXTURES} is absent (it sits beside the repository on Hallmark's own machines)`);
}
