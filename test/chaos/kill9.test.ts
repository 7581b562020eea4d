/**
 * Scenario 1 — kill -9.
 *
 * Four worker processes drain a batch of jobs while, every 2 seconds, a random
 * one is SIGKILLed (no shutdown, no release: its jobs stay `running` under its
 * lease) and a new one is started. Afterwards:
 *   - every job completed;
 *   - the jobs that ran more than once are among the jobs that were in flight in
 *     a killed worker (read from the table right after each kill: `running` and
 *     locked by the dead worker), so their count is within that bound;
 *   - no two runs of one job overlapped, and a killed run was taken over only
 *     after its lease could have lapsed (kill + lease - heartbeat interval).
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Effect, Layer } from "effect"
import { Jobs } from "../../src/index.ts"
import { Chaos } from "./jobs.ts"
import * as Chaos_ from "./support.ts"

const N = Chaos_.SHORT ? 2_000 : 20_000
const KILLS = Chaos_.SHORT ? 3 : 10
const WORKERS = 4
const LEASE_MS = 2000
const HEARTBEAT_MS = 500
// Sized so the batch outlasts the kills: ~ 4 workers x 8 slots / 90 ms (short), / 45 ms (full).
const SLEEP = Chaos_.SHORT ? { min: 60, max: 120 } : { min: 20, max: 70 }

const workerConfig = {
  concurrency: 8,
  leaseMs: LEASE_MS,
  heartbeatMs: HEARTBEAT_MS,
  maintenanceMs: 250,
  pollMs: 200,
  pool: 6
}

layer(Layer.provideMerge(Jobs.layer, Chaos_.layer()), { excludeTestServices: true })("chaos: kill -9", (it) => {
  it.effect(`${N} jobs, ${WORKERS} workers, a worker SIGKILLed every 2 s (${KILLS} times): nothing lost`, () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs
      const sql = yield* Chaos_.sqlClient
      const args = Array.from({ length: N }, (_, i) => ({
        i,
        sleepMs: SLEEP.min + Math.floor(Math.random() * (SLEEP.max - SLEEP.min))
      }))
      const ids: Array<string> = []
      for (const chunk of Chaos_.chunks(args, 5000)) ids.push(...(yield* jobs.enqueueMany(Chaos, chunk)))
      const workers = yield* Effect.forEach(Array.from({ length: WORKERS }), () => Chaos_.spawnWorker(workerConfig), {
        concurrency: "unbounded"
      })
      const t0 = yield* Clock.currentTimeMillis
      const kills: Array<{ pid: number; at: number; inFlight: ReadonlyArray<string>; completedBefore: number }> = []
      for (let k = 1; k <= KILLS; k++) {
        // The timer is the scenario: a kill every 2 seconds of the run.
        const due = t0 + 2000 * k
        yield* Effect.sleep(Math.max(0, due - (yield* Clock.currentTimeMillis)))
        const index = Math.floor(Math.random() * workers.length)
        const victim = workers[index]!
        const at = yield* Chaos_.killHard(victim)
        // The process is gone, so nothing can change its rows until their lease lapses:
        // what is `running` under its id now is exactly what it had in flight.
        const inFlight = yield* sql<{ readonly id: string }>`
          SELECT id::text FROM effect_jobs WHERE state = 'running' AND locked_by = ${victim.workerId}`
        const [done] = yield* sql<{ readonly n: number }>`
          SELECT count(*)::int AS n FROM effect_jobs WHERE state = 'completed'`
        kills.push({ pid: victim.pid, at, inFlight: inFlight.map((r) => r.id), completedBefore: done!.n })
        workers[index] = yield* Chaos_.spawnWorker(workerConfig)
      }
      const { counts, at: doneAt } = yield* Chaos_.waitAllTerminal("chaos")

      // -- checks ---------------------------------------------------------------------
      assert.deepStrictEqual(counts, { completed: N }, "every job completed, none in another state")
      for (const k of kills) assert.isTrue(k.completedBefore < N, "each kill happened while jobs were still running")

      const runs = yield* Chaos_.loadRuns
      const byJob = Chaos_.groupByJob(runs)
      const missing = ids.filter((id) => !(byJob.get(id) ?? []).some((r) => r.outcome === "ok"))
      assert.deepStrictEqual(missing, [], "every job has a finished run")

      const inFlight = new Set(kills.flatMap((k) => k.inFlight))
      const ranTwice = Array.from(byJob).filter(([, list]) => list.length > 1).map(([id]) => id)
      const unexplained = ranTwice.filter((id) => !inFlight.has(id))
      assert.deepStrictEqual(unexplained, [], "only jobs in flight in a killed worker ran more than once")
      assert.isAtMost(ranTwice.length, inFlight.size)

      const killedAt = new Map(kills.map((k) => [k.pid, k.at]))
      const { overlaps, rescueDelays } = Chaos_.checkOverlaps(byJob, killedAt)
      assert.deepStrictEqual(overlaps, [], "no two runs of one job overlapped")

      // Every job a killed worker held was rescued (its LeaseExpired entry says when), and not
      // before its lease could have lapsed: the last heartbeat was at most one interval before
      // the kill, so the lease ran at least LEASE - HEARTBEAT past it (50 ms for the round trip).
      const expired = yield* sql<{ readonly id: string; readonly at: string }>`
        SELECT id::text, e->>'at' AS at FROM effect_jobs, jsonb_array_elements(errors) e
        WHERE e->>'kind' = 'LeaseExpired'`
      const rescuedAt = new Map<string, Array<number>>()
      for (const r of expired) rescuedAt.set(r.id, [...(rescuedAt.get(r.id) ?? []), Date.parse(r.at)])
      const rescueMs: Array<number> = []
      const notRescued: Array<string> = []
      for (const k of kills) {
        for (const id of k.inFlight) {
          const at = (rescuedAt.get(id) ?? []).filter((t) => t >= k.at).sort((a, b) => a - b)[0]
          if (at === undefined) notRescued.push(id)
          else rescueMs.push(at - k.at)
        }
      }
      assert.deepStrictEqual(notRescued, [], "every job held by a killed worker was rescued")
      const early = rescueMs.filter((d) => d < LEASE_MS - HEARTBEAT_MS - 50)
      assert.deepStrictEqual(early, [], "no killed run was taken over while its lease could still be valid")

      const extraRuns = runs.length - N
      yield* Chaos_.recordResult("kill9", {
        jobs: N,
        workers: WORKERS,
        kills: kills.length,
        leaseMs: LEASE_MS,
        heartbeatMs: HEARTBEAT_MS,
        completed: counts.completed ?? 0,
        lost: N - (counts.completed ?? 0),
        runs: runs.length,
        extraRuns,
        jobsRunMoreThanOnce: ranTwice.length,
        jobsInFlightInKilledWorkers: inFlight.size,
        inFlightPerKill: kills.map((k) => k.inFlight.length),
        overlaps: overlaps.length,
        jobErrorKinds: yield* Chaos_.jobErrorKinds,
        workerErrors: Chaos_.errorSummary(),
        // kill -> the job back in the queue (lease lapsed, maintenance rescued it)
        rescuedAfterKillMs: Chaos_.summary(rescueMs),
        // kill -> its rerun started (rescued jobs queue behind the backlog: FIFO by run_at)
        rerunStartedAfterKillMs: Chaos_.summary(rescueDelays),
        durationMs: doneAt - t0
      })
    }))
})
