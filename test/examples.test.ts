/**
 * Every example in examples/ (but main.ts, the demo) runs as its own process,
 * as a user would run it, against a fresh database cloned from the migrated
 * template, and must exit 0 having printed its key line.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { readdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { inject } from "vitest"
import { freshDatabase } from "./support/admin.ts"

const root = fileURLToPath(new URL("..", import.meta.url))

/** A line each example prints only when it did what it shows. */
const expected: Record<string, RegExp> = {
  "basic.ts": /job (\d+) completed with messageId msg-\1\n/,
  "retries.ts": /charge-card #\d+: dead after 3 attempts/,
  "outcomes.ts": /wait-for-export: completed, attempt 1\n/,
  "transactional-enqueue.ts": /job \d+ after the rollback: does not exist/,
  "unique-jobs.ts": /enqueue twice with key welcome:42 -> ids (\d+) and \1\n/,
  "priorities-and-delays.ts": /order: password reset, order shipped, weekly newsletter, meeting starts, trial ends soon/,
  "graceful-shutdown.ts": /yearly is available with 0 attempts spent/,
  "request-id.ts": /stored request ids: job \d+: req-7f3a;/,
  "observability.ts": /scraped: effect_jobs_completed_total\{queue="reports",job_name="render-report"\} 5\n/,
  "otlp.ts": /collector received \d+ spans, \d+ of them job runs in the trace of "checkout"; metrics include effect_jobs_completed_total/,
  "bundles.ts": /bundle \d+ finished: completed 4, dead 1; follow-up job \d+\n/,
  "periodic.ts": /3 slots, 2000 and 2000 ms apart; jobs per slot: 1(, 1)+\n/,
  "await-result.ts": /job \d+: JobDead: no carrier ships to AQ\n/,
  "cancel-running.ts": /await\(\d+\) -> JobCancelled \(export no longer needed\)\n/,
  "testing.ts": /TestClock: charge-card completed on attempt 3 at \+30 min, trial-reminder at \+1440 min; the virtual clock moved 24 h\n/
}

const examples = readdirSync(new URL("../examples/", import.meta.url))
  .filter((file) => file.endsWith(".ts") && file !== "main.ts")
  .sort()

interface Run {
  readonly code: number | null
  readonly output: string
}

/** Runs `node examples/<file>` with DATABASE_URL set; kills it after 90 seconds. */
const runExample = (file: string, databaseUrl: string) =>
  Effect.callback<Run>((resume) => {
    const child = spawn(process.execPath, [`examples/${file}`], {
      cwd: root,
      env: { ...process.env, DATABASE_URL: databaseUrl },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    child.stdout.on("data", (chunk) => (output += chunk))
    child.stderr.on("data", (chunk) => (output += chunk))
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000)
    child.on("close", (code) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code, output }))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

let counter = 0

describe("examples", () => {
  it("every example has an expected line", () => {
    assert.deepStrictEqual(examples, Object.keys(expected).sort())
  })

  for (const file of examples) {
    it.live(file, () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase(
          inject("databaseUrl"),
          inject("templateDatabase"),
          `ej_example_${process.pid}_${Date.now().toString(36)}_${counter++}`
        )
        const { code, output } = yield* runExample(file, url)
        assert.strictEqual(code, 0, `node examples/${file} exited with ${code}:\n${output}`)
        assert.match(output, expected[file] ?? /$^/, `node examples/${file} printed:\n${output}`)
      }), 120_000)
  }
})
