/**
 * Scenario 7 — pool exhaustion.
 *
 * One worker process with a pool of 5 connections and 40 slots runs 200 jobs
 * whose handlers each hold a pooled connection (a transaction around their
 * work), so the handlers, the claim, the heartbeat, the completer and the
 * maintenance fiber all compete for the 5 connections (the registration and
 * pruner locks keep one each for themselves; the LISTEN session is a connection
 * of its own, outside the pool). No deadlock: the run completes.
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Effect, Layer } from "effect"
import { Jobs } from "../../src/index.ts"
import { Chaos } from "./jobs.ts"
import * as Chaos_ from "./support.ts"

const N = 200
const POOL = 5
const SLOTS = 40

layer(Layer.provideMerge(Jobs.layer, Chaos_.layer()), { excludeTestServices: true })("chaos: pool exhaustion", (it) => {
  it.effect(`${N} jobs holding connections, ${SLOTS} slots on a pool of ${POOL}: no deadlock`, () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(Chaos, Array.from({ length: N }, (_, i) => ({ i, sleepMs: 10 + (i % 5) * 10, hold: true })))
      const t0 = yield* Clock.currentTimeMillis
      yield* Chaos_.spawnWorker({ concurrency: SLOTS, pool: POOL, leaseMs: 5000, heartbeatMs: 1000 })
      const { counts, at } = yield* Chaos_.waitAllTerminal("chaos", { timeout: "60 seconds" })
      assert.deepStrictEqual(counts, { completed: N })
      const runs = yield* Chaos_.loadRuns
      const byJob = Chaos_.groupByJob(runs)
      assert.strictEqual(byJob.size, N)
      yield* Chaos_.recordResult("pool", {
        jobs: N,
        pool: POOL,
        slots: SLOTS,
        completed: counts.completed ?? 0,
        lost: N - (counts.completed ?? 0),
        runs: runs.length,
        durationMs: at - t0,
        jobErrorKinds: yield* Chaos_.jobErrorKinds,
        workerErrors: Chaos_.errorSummary()
      })
    }))
})
