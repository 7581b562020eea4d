import { defineConfig } from "vitest/config"

/**
 * The chaos suite (`npm run chaos`; `CHAOS_SHORT=1 npm run chaos` in CI).
 * Scenarios kill, stop and restart things that are shared (worker processes, the
 * Postgres server), so files run one at a time, and they run long.
 */
export default defineConfig({
  test: {
    include: ["test/chaos/**/*.test.ts"],
    globalSetup: ["test/chaos/setup.ts"],
    fileParallelism: false,
    testTimeout: 600_000,
    hookTimeout: 120_000
  }
})
