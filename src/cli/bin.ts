#!/usr/bin/env node
/**
 * The `effect-jobs` executable (package.json `bin`). The command line itself is in
 * main.ts; this file only checks what it needs first: a supported Node.js, and
 * `@effect/platform-node` (an optional peer dependency, needed by the command line
 * only), with one line and exit code 1 when either is missing.
 *
 * @since 0.1.0
 */
try {
  await import("../internal/nodeVersion.ts")
} catch (e) {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`)
  process.exit(1)
}

try {
  import.meta.resolve("@effect/platform-node/NodeRuntime")
} catch {
  process.stderr.write(
    "effect-jobs: the command line needs @effect/platform-node next to effect-jobs: npm install @effect/platform-node\n"
  )
  process.exit(1)
}

const { run } = await import("./main.ts")
run()
