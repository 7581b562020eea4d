/**
 * Scenario 9 — retry storm.
 *
 * Every job fails its first 3 attempts (a typed failure, retried after 10 ms),
 * on 4 worker processes at once: the retries go through `scheduled`, are
 * promoted by every worker's maintenance fiber concurrently, and are claimed
 * again. In the end every job completed exactly once (one successful run
 * each, 4 runs in all, attempt 4), and no completion was recorded twice.
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Effect, Layer } from "effect"
import { Jobs } from "../../src/index.ts"
import { Chaos } from "./jobs.ts"
import * as Chaos_ from "./support.ts"

const N = Chaos_.SHORT ? 1_000 : 5_000
const FAILURES = 3

layer(Layer.provideMerge(Jobs.layer, Chaos_.layer()), { excludeTestServices: true })("chaos: retry storm", (it) => {
  it.effect(`${N} jobs failing their first ${FAILURES} attempts, 4 workers: each completes exactly once`, () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const sql = yield* Chaos_.sqlClient
      const args = Array.from({ length: N }, (_, i) => ({ i, sleepMs: 0, failUntil: FAILURES }))
      for (const chunk of Chaos_.chunks(args, 5000)) yield* jobs.enqueueMany(Chaos, chunk)
      const t0 = yield* Clock.currentTimeMillis
      const config = { concurrency: 16, pool: 6, maintenanceMs: 100, pollMs: 100, leaseMs: 5000, heartbeatMs: 1000 }
      yield* Effect.forEach([1, 2, 3, 4], () => Chaos_.spawnWorker(config))
      const { counts, at } = yield* Chaos_.waitAllTerminal("chaos", { timeout: "5 minutes" })
      assert.deepStrictEqual(counts, { completed: N }, "every job completed")

      const runs = yield* Chaos_.loadRuns
      const byJob = Chaos_.groupByJob(runs)
      const wrong: Array<string> = []
      for (const [id, list] of byJob) {
        const ok = list.filter((r) => r.outcome === "ok")
        const failed = list.filter((r) => r.outcome === "failed")
        if (ok.length !== 1 || failed.length !== FAILURES || list.length !== FAILURES + 1) {
          wrong.push(`${id}: ${list.map((r) => `${r.attempt}:${r.outcome}`).join(",")}`)
        }
      }
      assert.strictEqual(byJob.size, N)
      assert.deepStrictEqual(wrong.slice(0, 10), [], "each job: 3 failed runs, then exactly one successful run")
      const rows = yield* sql<{ readonly attempt: number; readonly errors: number; readonly n: number }>`
        SELECT attempt, jsonb_array_length(errors)::int AS errors, count(*)::int AS n FROM effect_jobs.jobs GROUP BY 1, 2`
      assert.deepStrictEqual(rows, [{ attempt: FAILURES + 1, errors: FAILURES, n: N }], "attempt 4, 3 errors kept, for every job")
      const { overlaps } = Chaos_.checkOverlaps(byJob, new Map())
      assert.deepStrictEqual(overlaps, [])

      yield* Chaos_.recordResult("retryStorm", {
        jobs: N,
        workers: 4,
        failuresPerJob: FAILURES,
        completed: counts.completed ?? 0,
        lost: N - (counts.completed ?? 0),
        runs: runs.length,
        expectedRuns: N * (FAILURES + 1),
        successfulRunsPerJob: 1,
        completionsRecordedTwice: 0,
        durationMs: at - t0,
        workerErrors: Chaos_.errorSummary()
      })
    }))
})
