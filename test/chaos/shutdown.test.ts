/**
 * Scenario 4 — graceful shutdown under load.
 *
 * A worker with 50 jobs in flight gets SIGTERM. Its grace period is 2 s: the
 * 25 jobs that need 1 s complete; the 25 that need a minute are interrupted and
 * returned to the queue with their attempt given back (attempt 0 again, one
 * claim on record); the process exits within grace + 1 s of the signal. A
 * second worker then runs the returned jobs (short ones now) to completion.
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Deferred, Effect, Layer, Queue } from "effect"
import { Jobs } from "../../src/index.ts"
import { Chaos } from "./jobs.ts"
import * as Chaos_ from "./support.ts"

const GRACE_MS = 2000
const IN_FLIGHT = 50

layer(Layer.provideMerge(Jobs.layer, Chaos_.layer()), { excludeTestServices: true })("chaos: graceful shutdown", (it) => {
  it.effect(`SIGTERM with ${IN_FLIGHT} jobs in flight: finishers complete, the rest return unspent, exit within grace + 1 s`, () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const sql = yield* Chaos_.sqlClient
      const worker = yield* Chaos_.spawnWorker({ concurrency: IN_FLIGHT, graceMs: GRACE_MS, pool: 6, leaseMs: 5000, heartbeatMs: 1000 })
      // The long jobs first: they are surely still running when the short ones start. The short
      // ones become claimable at once (one statement) on 25 free slots, so they start within
      // moments of each other: all are still running when the last one has started.
      const slow = yield* jobs.enqueueMany(
        Chaos,
        Array.from({ length: IN_FLIGHT / 2 }, (_, i) => ({ i: 1000 + i, sleepMs: 60_000, announce: true }))
      )
      for (let n = 0; n < IN_FLIGHT / 2; n++) yield* Queue.take(worker.started)
      const quick = yield* jobs.enqueueMany(
        Chaos,
        Array.from({ length: IN_FLIGHT / 2 }, (_, i) => ({ i, sleepMs: 1000, announce: true }))
      )
      for (let n = 0; n < IN_FLIGHT / 2; n++) yield* Queue.take(worker.started)
      const [running] = yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE state = 'running'`
      assert.strictEqual(running!.n, IN_FLIGHT, "50 jobs in flight")

      const termAt = yield* worker.kill("SIGTERM")
      const exit = yield* Deferred.await(worker.exited)
      const exitMs = exit.at - termAt

      const rows = yield* sql<{ readonly id: string; readonly state: string; readonly attempt: number; readonly claim_count: number }>`
        SELECT id::text, state, attempt, claim_count FROM effect_jobs.jobs ORDER BY id`
      const byId = new Map(rows.map((r) => [r.id, r]))
      assert.strictEqual(exit.code, 0, "clean exit")
      assert.isAtMost(exitMs, GRACE_MS + 1000, "the process exits within grace + 1 s")
      for (const id of quick) assert.strictEqual(byId.get(id)?.state, "completed", `quick job ${id} completed`)
      for (const id of slow) {
        const r = byId.get(id)
        assert.strictEqual(r?.state, "available", `slow job ${id} returned to the queue`)
        assert.strictEqual(r?.attempt, 0, `slow job ${id}: attempt given back`)
        assert.strictEqual(r?.claim_count, 1, `slow job ${id}: claimed once`)
      }

      // The returned jobs run again elsewhere (quickly this time: the work is in the args, so
      // shorten it in place, as an operator might).
      yield* sql`UPDATE effect_jobs.jobs SET args = jsonb_set(args, '{sleepMs}', '10') WHERE state = 'available'`
      const restartAt = yield* Clock.currentTimeMillis
      yield* Chaos_.spawnWorker({ concurrency: 10, pool: 6 })
      const { counts, at } = yield* Chaos_.waitAllTerminal("chaos", { timeout: "60 seconds" })
      assert.deepStrictEqual(counts, { completed: IN_FLIGHT })
      const attempts = yield* sql<{ readonly attempt: number; readonly n: number }>`
        SELECT attempt, count(*)::int AS n FROM effect_jobs.jobs GROUP BY attempt`
      assert.deepStrictEqual(attempts, [{ attempt: 1, n: IN_FLIGHT }], "every job completed on its first counted attempt")

      yield* Chaos_.recordResult("shutdown", {
        inFlight: IN_FLIGHT,
        graceMs: GRACE_MS,
        exitAfterSigtermMs: exitMs,
        completedWithinGrace: quick.filter((id) => byId.get(id)?.state === "completed").length,
        returnedUnspent: slow.filter((id) => byId.get(id)?.state === "available" && byId.get(id)?.attempt === 0).length,
        lost: IN_FLIGHT - (counts.completed ?? 0),
        returnedRerunAndCompletedMs: at - restartAt
      })
    }))
})
