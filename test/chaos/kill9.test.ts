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
 *   - no two runs of one job overlapped, and a killed run was taken over only after
 *     the kill: by the rescuer once the dead worker's session lock was gone (`WorkerDied`,
 *     migrations/0006), or after the lease it last wrote had lapsed (`LeaseExpired`).
 *
 * Two variants: a short lease (2 s, heartbeat 500 ms, maintenance 250 ms), and the default
 * settings (lease 30 s, heartbeat 10 s, maintenance 1 s), where every job a killed worker
 * held must come back by `WorkerDied`, long before its lease (the time from the kill to the
 * rescue is measured and recorded, not asserted). Jobs that were only buffered (claimed, not
 * started) by the killed worker come back the same way, with their attempt given back
 * (migrations/0011); how many, and how many of those had in fact started (in the last beat
 * before the kill), is recorded.
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Effect, Fiber, Layer } from "effect"
import { Jobs } from "../../src/index.ts"
import { Chaos } from "./jobs.ts"
import * as Chaos_ from "./support.ts"

const N = Chaos_.SHORT ? 2_000 : 20_000
const KILLS = Chaos_.SHORT ? 3 : 10
const WORKERS = 4
// Sized so the batch outlasts the kill timer: ~ 4 workers x 8 slots / 90 ms (short), / 45 ms (full).
// If it runs faster, a kill comes early rather than after the batch: when only RESERVE jobs per
// kill still to do are left to complete.
const RESERVE = Math.floor(N / (4 * KILLS))
const SLEEP = Chaos_.SHORT ? { min: 60, max: 120 } : { min: 20, max: 70 }

interface Variant {
  /** The results file's key. */
  readonly scenario: string
  readonly title: string
  readonly leaseMs: number
  readonly heartbeatMs: number
  readonly maintenanceMs: number
  /** Every job of a killed worker must come back by `WorkerDied` (its lease is far off). */
  readonly workerDiedOnly: boolean
}

const variants: ReadonlyArray<Variant> = [
  { scenario: "kill9", title: "lease 2 s", leaseMs: 2000, heartbeatMs: 500, maintenanceMs: 250, workerDiedOnly: false },
  // The defaults of Worker.layer (lease 30 s, heartbeatInterval lease / 3, maintenanceInterval 1 s), spelled out.
  {
    scenario: "kill9-default-lease",
    title: "default lease (30 s)",
    leaseMs: 30_000,
    heartbeatMs: 10_000,
    maintenanceMs: 1000,
    workerDiedOnly: true
  }
]

for (const variant of variants) {
const LEASE_MS = variant.leaseMs
const HEARTBEAT_MS = variant.heartbeatMs
const workerConfig = {
  concurrency: 8,
  leaseMs: LEASE_MS,
  heartbeatMs: HEARTBEAT_MS,
  maintenanceMs: variant.maintenanceMs,
  pollMs: 200,
  pool: 6
}

layer(Layer.provideMerge(Jobs.layer, Chaos_.layer()), { excludeTestServices: true })(`chaos: kill -9, ${variant.title}`, (it) => {
  it.effect(`${N} jobs, ${WORKERS} workers, a worker SIGKILLed every 2 s (${KILLS} times), ${variant.title}: nothing lost`, () =>
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
        /** The lease the dead worker last wrote (null: already rescued as `WorkerDied` when read). */
        readonly leaseExpiresAt: number | null
      }
      const kills: Array<{
        pid: number
        workerId: string
        at: number
        inFlight: ReadonlyArray<InFlight>
        completedBefore: number
        sessionsGoneMs: number
      }> = []
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
        // The rescuer may already have sent some of them back (`WorkerDied`, as soon as the dead
        // worker's session lock is gone): those are read from the error entry it wrote, which
        // names the worker (no lease known then: it was not rescued by its lease).
        const inFlight = yield* sql<{ readonly id: string; readonly attempt: number; readonly lease_expires_at: Date | null }>`
          SELECT id::text, attempt, lease_expires_at FROM effect_jobs.jobs
          WHERE state = 'running' AND locked_by = ${victim.workerId}
          UNION
          SELECT j.id::text, (e->>'attempt')::int, NULL FROM effect_jobs.jobs j, jsonb_array_elements(j.errors) e
          WHERE e->>'kind' = 'WorkerDied' AND e->>'message' LIKE ${`%(${victim.workerId})%`}`
        kills.push({
          pid: victim.pid,
          workerId: victim.workerId,
          at,
          inFlight: inFlight.map((r) => ({ id: r.id, attempt: r.attempt, leaseExpiresAt: r.lease_expires_at?.getTime() ?? null })),
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

      // Every job a killed worker held was rescued (the WorkerDied or LeaseExpired entry of the
      // attempt it held says when and how): by its lease only after the lease the dead worker
      // last wrote had lapsed, and never before the kill. Both times come from the workers'
      // clocks (one machine), in whole milliseconds.
      // (Keyed by the worker the entry names too: a job given its attempt back is claimed again
      // under the same attempt number, and may be in flight in a second killed worker.)
      const rescues = yield* sql<{ readonly id: string; readonly attempt: number; readonly at: string; readonly kind: string; readonly message: string }>`
        SELECT id::text, (e->>'attempt')::int AS attempt, e->>'at' AS at, e->>'kind' AS kind, e->>'message' AS message
        FROM effect_jobs.jobs, jsonb_array_elements(errors) e
        WHERE e->>'kind' IN ('LeaseExpired', 'WorkerDied')`
      const rescuedAt = new Map(rescues.map((r) => [
        `${r.id}/${r.attempt}/${/\(([^)]*)\)/.exec(r.message)?.[1] ?? "?"}`,
        { at: Date.parse(r.at), kind: r.kind, givenBack: r.message.includes("died before it was seen to start the job") }
      ]))
      const rescueMs: Array<number> = []
      const workerDiedMs: Array<number> = []
      const afterLeaseMs: Array<number> = []
      const notRescued: Array<string> = []
      const byLease: Array<string> = []
      const early: Array<{ id: string; kind: string; rescuedAt: string; notBefore: string }> = []
      let buffered = 0
      // given back (migrations/0011): in all; of those, started there after all (in the last beat
      // before the kill); never started there but spent an attempt all the same
      let givenBack = 0
      let givenBackButStarted = 0
      let bufferedButSpent = 0
      for (const k of kills) {
        for (const j of k.inFlight) {
          const rescue = rescuedAt.get(`${j.id}/${j.attempt}/${k.workerId}`)
          if (rescue === undefined) {
            notRescued.push(j.id)
            continue
          }
          const { at, kind } = rescue
          rescueMs.push(at - k.at)
          if (kind === "WorkerDied") workerDiedMs.push(at - k.at)
          else byLease.push(j.id)
          // claimed by the killed worker but never started there: it was in its buffer
          const startedThere = (byJob.get(j.id) ?? []).some((r) => r.pid === k.pid && r.attempt === j.attempt)
          if (!startedThere) buffered++
          if (rescue.givenBack) givenBack++
          if (rescue.givenBack && startedThere) givenBackButStarted++
          if (!rescue.givenBack && !startedThere) bufferedButSpent++
          const notBefore = kind === "LeaseExpired" ? (j.leaseExpiresAt ?? k.at) : k.at
          if (kind === "LeaseExpired" && j.leaseExpiresAt !== null) afterLeaseMs.push(at - j.leaseExpiresAt)
          if (at < notBefore) {
            early.push({ id: j.id, kind, rescuedAt: new Date(at).toISOString(), notBefore: new Date(notBefore).toISOString() })
          }
        }
      }
      assert.deepStrictEqual(notRescued, [], "every job held by a killed worker was rescued")
      assert.deepStrictEqual(early, [], "no killed run was taken over before the kill, nor by its lease while the lease was valid")
      if (variant.workerDiedOnly) {
        assert.deepStrictEqual(byLease, [], "at the default lease, every job of a killed worker came back as WorkerDied")
      }

      const extraRuns = runs.length - N
      yield* Chaos_.recordResult(variant.scenario, {
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
        maintenanceMs: variant.maintenanceMs,
        // kill -> the job back in the queue (lease lapsed, or the dead worker's lock gone)
        rescuedAfterKillMs: Chaos_.summary(rescueMs),
        // the same, for the jobs rescued as WorkerDied (migrations/0006)
        workerDiedAfterKillMs: Chaos_.summary(workerDiedMs),
        workerDiedAfterKillMsAll: [...workerDiedMs].sort((a, b) => a - b),
        rescuedByLease: byLease.length,
        // of the jobs in flight in killed workers, those only buffered there (never started)
        bufferedInKilledWorkers: buffered,
        // of the jobs in flight in killed workers, those whose attempt the rescue gave back
        // (migrations/0011); of those, started there (less than a beat before the kill); and
        // jobs never started there that spent an attempt all the same
        attemptGivenBack: givenBack,
        attemptGivenBackButStarted: givenBackButStarted,
        bufferedButAttemptSpent: bufferedButSpent,
        // the lease the dead worker last wrote -> the rescue (up to a maintenance interval)
        rescuedAfterLeaseExpiryMs: Chaos_.summary(afterLeaseMs),
        // kill -> its rerun started (rescued jobs queue behind the backlog: FIFO by run_at)
        rerunStartedAfterKillMs: Chaos_.summary(rescueDelays),
        durationMs: doneAt - t0
      })
    }))
})
}
