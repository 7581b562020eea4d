/**
 * Scenario 3 — connections cut.
 *
 * `pg_terminate_backend` on every connection of every worker (pooled ones and
 * the LISTEN session) several times:
 *   1. under load: a batch drains while every worker connection is cut once a
 *      second; every job completes;
 *   2. idle: after each cut, a job enqueued at once starts within one poll
 *      interval (the poll, or the LISTEN coming back, finds it), and once the
 *      LISTEN sessions are back (seen in pg_stat_activity) a job starts at
 *      NOTIFY speed. The poll interval is long (3 s) so the two are told apart.
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Effect, Layer, Option, Queue } from "effect"
import { Jobs } from "../../src/index.ts"
import { Chaos } from "./jobs.ts"
import * as Chaos_ from "./support.ts"

const N = Chaos_.SHORT ? 2_000 : 5_000
const LOAD_CUTS = Chaos_.SHORT ? 3 : 6
const IDLE_CUTS = Chaos_.SHORT ? 4 : 8
const POLL_MS = 3000
/** A job that starts within this of its enqueue was woken by NOTIFY, not by the 3 s poll. */
const NOTIFY_SPEED_MS = 250

const workerConfig = { concurrency: 8, pool: 6, pollMs: POLL_MS, leaseMs: 5000, heartbeatMs: 1000 }

/** Terminates every backend of the chaos workers; returns how many. */
const cutAll = Effect.flatMap(Chaos_.sqlClient, (sql) =>
  Effect.map(
    sql<{ readonly n: number }>`
      SELECT count(*)::int AS n FROM (
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_database() AND application_name LIKE 'chaos-worker%') t`,
    (rows) => rows[0]!.n
  )).pipe(Effect.orDie)

/**
 * Workers whose LISTEN session is up (its last statement was a LISTEN: one session per
 * process for all its channels, internal/Notifier.ts; new jobs are LISTENed on first).
 */
const listening = Effect.flatMap(Chaos_.sqlClient, (sql) =>
  Effect.map(
    sql<{ readonly n: number }>`
      SELECT count(DISTINCT application_name)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND application_name LIKE 'chaos-worker%'
        AND query LIKE 'LISTEN "effect_jobs.%"' AND state = 'idle'`,
    (rows) => rows[0]!.n
  )).pipe(Effect.orDie)

layer(Layer.provideMerge(Jobs.layer, Chaos_.layer()), { excludeTestServices: true })("chaos: connections cut", (it) => {
  it.effect(`${N} jobs drain while every worker connection is cut ${LOAD_CUTS} times; wake-ups resume after ${IDLE_CUTS} idle cuts`, () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const workers = yield* Effect.forEach([1, 2], () => Chaos_.spawnWorker(workerConfig))

      // -- 1. under load -------------------------------------------------------------------
      const args = Array.from({ length: N }, (_, i) => ({ i, sleepMs: 20 + Math.floor(Math.random() * 40) }))
      for (const chunk of Chaos_.chunks(args, 5000)) yield* jobs.enqueueMany(Chaos, chunk)
      const t0 = yield* Clock.currentTimeMillis
      const cutsUnderLoad: Array<number> = []
      for (let k = 1; k <= LOAD_CUTS; k++) {
        yield* Effect.sleep(Math.max(0, t0 + 1000 * k - (yield* Clock.currentTimeMillis)))
        cutsUnderLoad.push(yield* cutAll)
      }
      const { counts, at: drainedAt } = yield* Chaos_.waitAllTerminal("chaos")
      assert.deepStrictEqual(counts, { completed: N }, "every job completed")
      const runs = yield* Chaos_.loadRuns
      const { overlaps } = Chaos_.checkOverlaps(Chaos_.groupByJob(runs), new Map())
      assert.deepStrictEqual(overlaps, [], "no overlapping runs")

      // -- 2. idle: wake-ups after each cut ------------------------------------------------
      // Every worker announces its runs of `announce` jobs; whichever runs the probe reports it.
      const started = yield* Queue.unbounded<{ id: string; at: number }>()
      for (const w of workers) {
        yield* Effect.forkChild(Effect.forever(Effect.flatMap(Queue.take(w.started), (s) => Queue.offer(started, s))))
      }
      const probe = Effect.gen(function*() {
        const at = yield* Clock.currentTimeMillis
        const id = yield* jobs.enqueue(Chaos, { i: -1, sleepMs: 0, announce: true })
        while (true) {
          const s = yield* Queue.take(started)
          if (s.id === id) return s.at - at
        }
      })
      yield* Chaos_.waitUntil("both workers listening", Effect.map(listening, (n) => (n === 2 ? Option.some(n) : Option.none())), {
        every: "20 millis",
        timeout: "30 seconds"
      })
      const idle: Array<{ firstJobMs: number; listenBackMs: number; notifyJobMs: number }> = []
      for (let k = 0; k < IDLE_CUTS; k++) {
        const cutAt = yield* Clock.currentTimeMillis
        yield* cutAll
        const firstJobMs = yield* probe
        const listenBackAt = yield* Chaos_.waitUntil(
          "the LISTEN connections are back",
          Effect.map(listening, (n) => (n === 2 ? Option.some(Date.now()) : Option.none())),
          { every: "20 millis", timeout: "30 seconds" }
        )
        const notifyJobMs = yield* probe
        idle.push({ firstJobMs, listenBackMs: listenBackAt - cutAt, notifyJobMs })
      }
      yield* Effect.logInfo("idle cuts", JSON.stringify(idle))
      for (const [k, r] of idle.entries()) {
        assert.isAtMost(r.firstJobMs, POLL_MS * 1.1 + 500, `cut ${k + 1}: a job enqueued right after the cut starts within a poll interval`)
        assert.isAtMost(r.notifyJobMs, NOTIFY_SPEED_MS, `cut ${k + 1}: once LISTEN is back, a job starts at NOTIFY speed`)
        assert.isAtMost(r.listenBackMs, 1500, `cut ${k + 1}: LISTEN is back within 1.5 s (backoff resets after each success)`)
      }

      yield* Chaos_.recordResult("connections", {
        jobs: N,
        completed: counts.completed ?? 0,
        lost: N - (counts.completed ?? 0),
        cutsUnderLoad: cutsUnderLoad.length,
        connectionsCutPerCut: cutsUnderLoad,
        drainMs: drainedAt - t0,
        overlaps: overlaps.length,
        jobsRunMoreThanOnce: Array.from(Chaos_.groupByJob(runs).values()).filter((l) => l.length > 1).length,
        jobErrorKinds: yield* Chaos_.jobErrorKinds,
        idleCuts: idle.length,
        pollIntervalMs: POLL_MS,
        firstJobAfterCutMs: Chaos_.summary(idle.map((r) => r.firstJobMs)),
        listenBackAfterCutMs: Chaos_.summary(idle.map((r) => r.listenBackMs)),
        jobAfterListenBackMs: Chaos_.summary(idle.map((r) => r.notifyJobMs)),
        perCut: idle,
        workerErrors: Chaos_.errorSummary()
      })
    }))
})
