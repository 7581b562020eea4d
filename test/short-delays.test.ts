/**
 * Short delays honoured: a retry or snooze with a delay shorter than the maintenance interval
 * runs when it is due, not at the next maintenance round. The worker that wrote it promotes
 * it then (internal/worker/DueTimers.ts).
 *
 * Every worker here polls once an hour and runs maintenance once an hour: within a test,
 * nothing but that local promotion can make the retry runnable. Without it the second
 * attempt would not start before the hour is up, and each test fails on its wait's deadline
 * (a bound on a wait, far below the hour; not a measure of how soon it ran).
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Duration, Effect, Layer, Option, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { advanceUntil, makeProbe, startOfNextSecond, withTestClock } from "./support/probes.ts"

class Flaky extends Schema.TaggedError<Flaky>()("Flaky", { message: Schema.String }) {}

const hourly = (queue: string) => ({
  queues: { [queue]: { concurrency: 4, pollInterval: "1 hour" } },
  maintenanceInterval: "1 hour",
  pruner: false
} as const)

/** Far below the hour of maintenance and polling; far above what the promotion takes. */
const deadline = Duration.seconds(15)

const Retried = Job.make("short-retry", {
  args: Schema.Struct({}),
  queue: "short-retry",
  retry: Schedule.spaced("150 millis"),
  maxAttempts: 3
})
const Snoozed = Job.make("short-snooze", { args: Schema.Struct({}), queue: "short-snooze" })
const OnClock = Job.make("short-clock", {
  args: Schema.Struct({}),
  queue: "short-clock",
  retry: Schedule.spaced("200 millis"),
  maxAttempts: 3
})

/** Attempt 2's claim time and the times of attempt 1's outcome, from the job's row. */
const timesOf = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ state: string; attempt: number; attempted_at: Date; run_at: Date; failed_at: string | null }>`
      SELECT state, attempt, attempted_at, run_at, errors -> 0 ->> 'at' AS failed_at
      FROM effect_jobs.jobs WHERE id = ${id}::bigint`).pipe(Effect.map((rows) => rows[0]!), Effect.orDie)

const completedWithin = (probe: Effect.Success<typeof makeProbe>, id: string) =>
  Effect.gen(function*() {
    const first = yield* probe.next(id)
    assert.notStrictEqual(first._tag, "completed", "attempt 1 ends in a delay")
    const done = yield* probe.next(id).pipe(Effect.timeoutOption(deadline))
    assert.isTrue(Option.isSome(done), `the retry did not run within ${Duration.format(deadline)}`)
    assert.strictEqual(Option.getOrThrow(done)._tag, "completed")
  })

layer(Jobs.layer.pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })("short delays", (it) => {
  it.effect("a failure retried after 150 ms runs again without waiting for maintenance, and not before it is due", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* startWorker(
        hourly("short-retry"),
        Layer.merge(
          Job.toLayer(Retried, (_, ctx) => ctx.attempt === 1 ? Effect.fail(new Flaky({ message: "once" })) : Effect.void),
          probe.layer
        )
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(Retried, {})
      yield* completedWithin(probe, id)
      const r = yield* timesOf(id)
      assert.strictEqual(r.attempt, 2)
      const failedAt = Date.parse(r.failed_at!)
      // the stored run time is the Schedule's delay after the failure, and the claim came after it
      assert.strictEqual(r.run_at.getTime() - failedAt, 150)
      assert.isAtLeast(r.attempted_at.getTime(), r.run_at.getTime())
    }))

  it.effect("Job.snooze(100 ms) runs again without waiting for maintenance", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      let runs = 0
      yield* startWorker(
        hourly("short-snooze"),
        Layer.merge(Job.toLayer(Snoozed, () => Effect.suspend(() => ++runs === 1 ? Job.snooze("100 millis") : Effect.void)), probe.layer)
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(Snoozed, {})
      yield* completedWithin(probe, id)
      assert.strictEqual(runs, 2)
      const r = yield* timesOf(id)
      assert.strictEqual(r.attempt, 1, "a snooze gives its attempt back")
      assert.isAtLeast(r.attempted_at.getTime(), r.run_at.getTime())
    }))

  it.effect("on a TestClock, the retry falls due when the clock reaches it", () => {
    const t0 = startOfNextSecond()
    return withTestClock(
      t0,
      Effect.gen(function*() {
        const probe = yield* makeProbe
        const ranAt: Array<number> = []
        yield* startWorker(
          hourly("short-clock"),
          Layer.merge(
            Job.toLayer(OnClock, (_, ctx) =>
              Effect.gen(function*() {
                ranAt.push(yield* Clock.currentTimeMillis)
                if (ctx.attempt === 1) return yield* new Flaky({ message: "once" })
              })),
            probe.layer
          )
        )
        const id = yield* (yield* Jobs.Jobs).enqueue(OnClock, {})
        assert.strictEqual((yield* probe.next(id))._tag, "retryScheduled")
        // Never moved past a second: well before the hour of maintenance. The timer sleeps to a
        // time fixed in advance (the retry's), so the limit cannot strand it (see advanceUntil).
        const done = yield* advanceUntil(probe.poll(id), { step: "10 millis", limit: t0 + 999 })
        assert.strictEqual(done._tag, "completed")
        assert.strictEqual(ranAt[0], t0)
        assert.isAtLeast(ranAt[1]!, t0 + 200, "not before it was due")
        const r = yield* timesOf(id)
        assert.strictEqual(r.run_at.getTime(), t0 + 200)
      })
    )
  }, 30_000)
})
