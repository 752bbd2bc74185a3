import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["test/setup.ts"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: SoftHSM and swtpm processes are per-file; keep file parallelism modest.
    maxWorkers: 2,
    reporters: ["default"],
  },
});
