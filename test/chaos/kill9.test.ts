/**
 * Scenario 1 — kill -9.
 *
 * Four worker processes drain a batch of jobs while, every 2 seconds (sooner
 * if the batch is about to run out, so every kill lands while work remains), a
 * random one is SIGKILLed (no shutdown, no release: its
 * jobs stay `running` under its lease) and a new one is started. Afterwards:
 *   - every job completed;
 *   - the jobs that ran more than once are among the jobs that were in flight in
 *     a killed worker (read from the table once the dead worker's sessions are
 *     gone: `running` and locked by it), so their count is within that bound;
 *   - no two runs of one job overlapped, and a killed run was taken over only
 *     after the lease it last wrote had lapsed.
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Effect, Fiber, Layer } from "effect"
import { Jobs } from "../../src/index.ts"
import { Chaos } from "./jobs.ts"
import * as Chaos_ from "./support.ts"

const N = Chaos_.SHORT ? 2_000 : 20_000
const KILLS = Chaos_.SHORT ? 3 : 10
const WORKERS = 4
const LEASE_MS = 2000
const HEARTBEAT_MS = 500
// Sized so the batch outlasts the kill timer: ~ 4 workers x 8 slots / 90 ms (short), / 45 ms (full).
// If it runs faster, a kill comes early rather than after the batch: when only RESERVE jobs per
// kill still to do are left to complete.
const RESERVE = Math.floor(N / (4 * KILLS))
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
      const jobs = yield* Jobs.Jobs
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
      const completed = Effect.map(
        sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE state = 'completed'`,
        (rows) => rows[0]!.n
      )
      interface InFlight {
        readonly id: string
        readonly attempt: number
        /** The lease the dead worker last wrote: no rescue may come before it. */
        readonly leaseExpiresAt: number
      }
      const kills: Array<{ pid: number; at: number; inFlight: ReadonlyArray<InFlight>; completedBefore: number; sessionsGoneMs: number }> = []
      // Replacements start in the background (a process takes 1-3 s to be ready on a busy
      // machine): the kills keep to their own schedule, and join the workers once ready.
      const replacements: Array<Fiber.Fiber<void>> = []
      for (let k = 1; k <= KILLS; k++) {
        // The timer is the scenario: a kill every 2 seconds of the run; but sooner if the batch is
        // about to run out (no more than RESERVE jobs left per kill still to do), so every kill lands
        // while work remains, however fast the run.
        const due = t0 + 2000 * k
        const enough = N - (KILLS - k + 1) * RESERVE
        while (true) {
          const now = yield* Clock.currentTimeMillis
          if (workers.length > 0 && (now >= due || (yield* completed) >= enough)) break
          yield* Effect.sleep(Math.max(10, Math.min(50, due - now)))
        }
        const index = Math.floor(Math.random() * workers.length)
        const victim = workers.splice(index, 1)[0]!
        const at = yield* Chaos_.killHard(victim)
        // The process is gone, but a statement it sent just before (a finish, a heartbeat) may still
        // commit in its backend: wait until its sessions are gone. From then on nothing changes its
        // rows until their lease lapses: what is `running` under its id is exactly what it had in
        // flight, and their lease is the last it wrote.
        const sessionsGoneMs = yield* Chaos_.waitSessions(victim, "gone")
        const inFlight = yield* sql<{ readonly id: string; readonly attempt: number; readonly lease_expires_at: Date }>`
          SELECT id::text, attempt, lease_expires_at FROM effect_jobs.jobs
          WHERE state = 'running' AND locked_by = ${victim.workerId}`
        kills.push({
          pid: victim.pid,
          at,
          inFlight: inFlight.map((r) => ({ id: r.id, attempt: r.attempt, leaseExpiresAt: r.lease_expires_at.getTime() })),
          completedBefore: yield* completed,
          sessionsGoneMs
        })
        replacements.push(yield* Effect.forkChild(Effect.map(Chaos_.spawnWorker(workerConfig), (w) => void workers.push(w))))
      }
      yield* Fiber.joinAll(replacements)
      const { counts, at: doneAt } = yield* Chaos_.waitAllTerminal("chaos")

      // -- checks ---------------------------------------------------------------------
      assert.deepStrictEqual(counts, { completed: N }, "every job completed, none in another state")
      for (const k of kills) assert.isTrue(k.completedBefore < N, "each kill happened while jobs were still running")

      const runs = yield* Chaos_.loadRuns
      const byJob = Chaos_.groupByJob(runs)
      const missing = ids.filter((id) => !(byJob.get(id) ?? []).some((r) => r.outcome === "ok"))
      assert.deepStrictEqual(missing, [], "every job has a finished run")

      const inFlight = new Set(kills.flatMap((k) => k.inFlight.map((j) => j.id)))
      const ranTwice = Array.from(byJob).filter(([, list]) => list.length > 1).map(([id]) => id)
      const unexplained = ranTwice.filter((id) => !inFlight.has(id))
      assert.deepStrictEqual(unexplained, [], "only jobs in flight in a killed worker ran more than once")
      assert.isAtMost(ranTwice.length, inFlight.size)

      const killedAt = new Map(kills.map((k) => [k.pid, k.at]))
      const { overlaps, rescueDelays } = Chaos_.checkOverlaps(byJob, killedAt)
      assert.deepStrictEqual(overlaps, [], "no two runs of one job overlapped")

      // Every job a killed worker held was rescued (the LeaseExpired entry of the attempt it held
      // says when), and not before the lease the dead worker last wrote had lapsed. Both times
      // come from the workers' clocks (one machine), in whole milliseconds.
      const expired = yield* sql<{ readonly id: string; readonly attempt: number; readonly at: string }>`
        SELECT id::text, (e->>'attempt')::int AS attempt, e->>'at' AS at FROM effect_jobs.jobs, jsonb_array_elements(errors) e
        WHERE e->>'kind' = 'LeaseExpired'`
      const rescuedAt = new Map(expired.map((r) => [`${r.id}/${r.attempt}`, Date.parse(r.at)]))
      const rescueMs: Array<number> = []
      const afterLeaseMs: Array<number> = []
      const notRescued: Array<string> = []
      const early: Array<{ id: string; rescuedAt: string; leaseExpiresAt: string }> = []
      for (const k of kills) {
        for (const j of k.inFlight) {
          const at = rescuedAt.get(`${j.id}/${j.attempt}`)
          if (at === undefined) {
            notRescued.push(j.id)
            continue
          }
          rescueMs.push(at - k.at)
          afterLeaseMs.push(at - j.leaseExpiresAt)
          if (at < j.leaseExpiresAt) {
            early.push({ id: j.id, rescuedAt: new Date(at).toISOString(), leaseExpiresAt: new Date(j.leaseExpiresAt).toISOString() })
          }
        }
      }
      assert.deepStrictEqual(notRescued, [], "every job held by a killed worker was rescued")
      assert.deepStrictEqual(early, [], "no killed run was taken over while its lease was valid")

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
        killedAfterMs: kills.map((k) => k.at - t0),
        completedAtKill: kills.map((k) => k.completedBefore),
        // kill -> no session of the dead worker left in pg_stat_activity
        sessionsGoneAfterKillMs: Chaos_.summary(kills.map((k) => k.sessionsGoneMs)),
        overlaps: overlaps.length,
        jobErrorKinds: yield* Chaos_.jobErrorKinds,
        workerErrors: Chaos_.errorSummary(),
        // kill -> the job back in the queue (lease lapsed, maintenance rescued it)
        rescuedAfterKillMs: Chaos_.summary(rescueMs),
        // the lease the dead worker last wrote -> the rescue (up to a maintenance interval)
        rescuedAfterLeaseExpiryMs: Chaos_.summary(afterLeaseMs),
        // kill -> its rerun started (rescued jobs queue behind the backlog: FIFO by run_at)
        rerunStartedAfterKillMs: Chaos_.summary(rescueDelays),
        durationMs: doneAt - t0
      })
    }))
})
