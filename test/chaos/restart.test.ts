/**
 * Scenario 2 — Postgres restart mid-run.
 *
 * Three worker processes drain a batch; in the middle the server is shut down
 * with `pg_ctl stop -m fast` (every session is terminated), kept down for a few
 * seconds, and started again. Nothing reconnects the workers but themselves.
 * During the outage the test keeps calling `enqueue`: every call must fail
 * promptly with a typed, retryable `SqlError`, never hang; an enqueue in flight
 * at the stop must commit or fail retryably; and one of the workers, sent
 * SIGTERM while the server is down, must exit cleanly within grace + the
 * shutdown write bound, before the server is back.
 *
 * The outage (`OUTAGE_MS`, 8 s) is longer than the lease (`LEASE_MS`, 5 s): no
 * heartbeat reaches the database meanwhile, so the workers stop the runs whose
 * lease ran out, and after the restart the jobs whose lease lapsed are rescued
 * and run again. A job may therefore run more than once; that count is
 * recorded, not asserted. What is asserted afterwards is that every job
 * completed and that no two runs of a job overlapped. The recovery time is
 * recorded.
 *
 * Runs only on the suite's own server: with DATABASE_URL it is skipped.
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Deferred, Effect, Exit, Fiber, Layer, Option } from "effect"
import { inject } from "vitest"
import { Jobs } from "../../src/index.ts"
import { Chaos } from "./jobs.ts"
import { pgCtl, pgStart } from "./setup.ts"
import * as Chaos_ from "./support.ts"

const embedded = inject("chaosEmbedded")
const N = Chaos_.SHORT ? 2_000 : 10_000
/** Longer than the lease, and than grace + the shutdown write bound: both are exercised. */
const OUTAGE_MS = 8000
const LEASE_MS = 5000
const GRACE_MS = 1000
/** How long a shutdown may spend on unwritable outcomes after its grace period (Worker.ts). */
const SHUTDOWN_WRITE_MS = 5000
const CONNECT_TIMEOUT_MS = 2000

const workerConfig = { concurrency: 8, leaseMs: LEASE_MS, heartbeatMs: 1000, pool: 6, pollMs: 200, graceMs: GRACE_MS }

layer(Layer.provideMerge(Jobs.layer, Chaos_.layer({ connectTimeout: CONNECT_TIMEOUT_MS })), {
  excludeTestServices: true
})("chaos: Postgres restart", (it) => {
  it.effect.skipIf(embedded === null)(
    `${N} jobs; the server stops for ${OUTAGE_MS / 1000} s mid-run: workers reconnect, enqueue fails fast and retryable, a shutdown meanwhile is bounded, nothing lost`,
    () =>
      Effect.gen(function*() {
        const jobs = yield* Jobs.Jobs
        const sql = yield* Chaos_.sqlClient
        const args = Array.from({ length: N }, (_, i) => ({ i, sleepMs: 20 + Math.floor(Math.random() * 60) }))
        for (const chunk of Chaos_.chunks(args, 5000)) yield* jobs.enqueueMany(Chaos, chunk)
        const t0 = yield* Clock.currentTimeMillis
        const workers = yield* Effect.forEach([1, 2, 3], () => Chaos_.spawnWorker(workerConfig), { concurrency: "unbounded" })

        // Let the run get going: a third of the jobs done.
        yield* Chaos_.waitUntil(
          "a third of the jobs completed",
          Effect.map(Chaos_.countStates("chaos"), (c) => ((c.completed ?? 0) >= N / 3 ? Option.some(c) : Option.none()))
        )
        const [before] = yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE state = 'completed'`

        // An enqueue in flight while the server goes down: it committed, or it failed retryably.
        const inFlight = yield* Effect.forkChild(Effect.exit(jobs.enqueueMany(Chaos, args.slice(0, 2000).map((a) => ({ ...a, i: N + a.i })))))
        const stopAt = yield* Clock.currentTimeMillis
        const stopping = workers[2]!
        // The outage. The server is started again however it ends: a failure (or a stop that
        // failed half-way) must not leave it down for the files that run after this one.
        let restarted = false
        const { termAt, attempts, stoppedBeforeRestart, upAt } = yield* Effect.gen(function*() {
          pgCtl(embedded!, ["stop", "-m", "fast", "-w"])
          const downAt = yield* Clock.currentTimeMillis
          // A graceful shutdown while the database is away: bounded, not hung on unwritable outcomes.
          const termAt = yield* stopping.kill("SIGTERM")

          // During the outage: enqueue keeps failing, fast and retryable.
          const attempts: Array<{ ms: number; tag: string; retryable: boolean; reason: string }> = []
          while ((yield* Clock.currentTimeMillis) - downAt < OUTAGE_MS) {
            const start = yield* Clock.currentTimeMillis
            const exit = yield* Effect.exit(jobs.enqueue(Chaos, { i: -1, sleepMs: 0 }).pipe(Effect.timeout("30 seconds")))
            const ms = (yield* Clock.currentTimeMillis) - start
            if (Exit.isSuccess(exit)) assert.fail("an enqueue succeeded while the server was down")
            const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
            const e = error?._tag === "Fail" ? error.error as { _tag: string; isRetryable?: boolean; reason?: { _tag: string } } : undefined
            attempts.push({ ms, tag: e?._tag ?? "defect", retryable: e?.isRetryable === true, reason: e?.reason?._tag ?? "" })
            yield* Effect.sleep("200 millis")
          }
          const stoppedBeforeRestart = Option.isSome(yield* Deferred.poll(stopping.exited))
          pgStart(embedded!)
          restarted = true
          const upAt = yield* Clock.currentTimeMillis
          return { termAt, attempts, stoppedBeforeRestart, upAt }
        }).pipe(Effect.ensuring(Effect.sync(() => {
          if (restarted) return
          try {
            pgStart(embedded!)
          } catch {
            // already running (the stop failed before it took the server down)
          }
        })))
        const stopped = yield* Deferred.await(stopping.exited)
        const shutdownMs = stopped.at - termAt

        const inFlightExit = yield* Fiber.join(inFlight)
        const inFlightResult = Exit.isSuccess(inFlightExit)
          ? "committed"
          : (() => {
            const f = inFlightExit.cause.reasons.find((r) => r._tag === "Fail")
            const e = f?._tag === "Fail" ? f.error as { _tag: string; isRetryable?: boolean; reason?: { _tag: string } } : undefined
            return `${e?._tag}/${e?.reason?._tag}/retryable=${e?.isRetryable}`
          })()
        const total = N + (Exit.isSuccess(inFlightExit) ? 2000 : 0)

        // Recovery: the first run that starts after the server is back.
        const firstRunAfter = yield* Chaos_.waitUntil(
          "a run started after the restart",
          Effect.map(
            sql<{ readonly at: Date }>`SELECT min(started_at) AS at FROM chaos_runs WHERE started_at > ${new Date(upAt).toISOString()}::timestamptz`,
            (rows) => (rows[0]?.at != null ? Option.some(rows[0].at.getTime()) : Option.none<number>())
          ).pipe(Effect.catch(() => Effect.succeed(Option.none<number>())))
        )
        const firstCompletionAfter = yield* Chaos_.waitUntil(
          "a job completed after the restart",
          Effect.map(
            sql<{ readonly at: Date | null }>`SELECT min(finalized_at) AS at FROM effect_jobs.jobs
                                              WHERE finalized_at > ${new Date(upAt).toISOString()}::timestamptz`,
            (rows) => (rows[0]?.at != null ? Option.some(rows[0].at.getTime()) : Option.none<number>())
          ).pipe(Effect.catch(() => Effect.succeed(Option.none<number>())))
        )
        const { counts, at: doneAt } = yield* Chaos_.waitAllTerminal("chaos")

        // -- checks ---------------------------------------------------------------------
        assert.isAbove(attempts.length, 3, "enqueue was tried during the outage")
        for (const a of attempts) {
          assert.strictEqual(a.tag, "SqlError", `enqueue during the outage fails with SqlError (${JSON.stringify(a)})`)
          assert.isTrue(a.retryable, `... marked retryable (${JSON.stringify(a)})`)
          assert.isBelow(a.ms, CONNECT_TIMEOUT_MS + 1000, "... and promptly")
        }
        assert.isTrue(
          inFlightResult === "committed" || inFlightResult.endsWith("retryable=true"),
          `the enqueue in flight at the stop committed or failed retryably: ${inFlightResult}`
        )
        assert.deepStrictEqual(counts, { completed: total }, "every job completed")
        assert.strictEqual(stopped.code, 0, "the worker stopped during the outage exited cleanly")
        assert.isTrue(stoppedBeforeRestart, "the worker stopped during the outage did not wait for the database")
        assert.isAtMost(shutdownMs, GRACE_MS + SHUTDOWN_WRITE_MS + 1500, "its shutdown took at most grace + the write bound")
        const runs = yield* Chaos_.loadRuns
        const byJob = Chaos_.groupByJob(runs)
        const ranTwice = Array.from(byJob.values()).filter((l) => l.length > 1).length
        const { overlaps } = Chaos_.checkOverlaps(byJob, new Map())
        assert.strictEqual(overlaps.length, 0, "no overlapping runs")

        yield* Chaos_.recordResult("restart", {
          jobs: total,
          completed: counts.completed ?? 0,
          lost: total - (counts.completed ?? 0),
          completedBeforeStop: before!.n,
          outageMs: upAt - stopAt,
          leaseMs: LEASE_MS,
          enqueueDuringOutage: {
            calls: attempts.length,
            allSqlErrorRetryable: attempts.every((a) => a.tag === "SqlError" && a.retryable),
            reasons: [...new Set(attempts.map((a) => a.reason))],
            latencyMs: Chaos_.summary(attempts.map((a) => a.ms))
          },
          enqueueInFlightAtStop: inFlightResult,
          shutdownDuringOutage: { graceMs: GRACE_MS, writeBoundMs: SHUTDOWN_WRITE_MS, exitAfterSigtermMs: shutdownMs, exitedBeforeRestart: stoppedBeforeRestart },
          jobsRunMoreThanOnce: ranTwice,
          // The outage outlasts the lease: runs whose lease ran out with no heartbeat are stopped.
          runsStoppedByLeaseWatch: Object.entries(Chaos_.errorSummary())
            .filter(([m]) => m.includes("ran out with no heartbeat")).reduce((n, [, c]) => n + c, 0),
          // A handler whose own statements hit the outage fails its attempt and is retried.
          jobErrorKinds: yield* Chaos_.jobErrorKinds,
          workerErrors: Chaos_.errorSummary(),
          overlaps: overlaps.length,
          firstRunAfterRestartMs: firstRunAfter - upAt,
          firstCompletionAfterRestartMs: firstCompletionAfter - upAt,
          drainAfterRestartMs: doneAt - upAt,
          durationMs: doneAt - t0
        })
      })
  )
})
