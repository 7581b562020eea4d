import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: ["test/chaos/**", "node_modules/**"],
    globalSetup: ["test/support/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each file gets its own database, so files run in parallel safely.
    fileParallelism: true,
    // The examples run as their own processes and import "effect-jobs": this condition
    // resolves that to src/ (package.json's exports) instead of a built dist/.
    env: { NODE_OPTIONS: [process.env.NODE_OPTIONS, "--conditions=@effect-jobs/source"].filter(Boolean).join(" ") }
  }
})
