/** Typed results, `Jobs.status` and `Jobs.await`; cancelling a running job by NOTIFY. */
import { assert, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { getJob, startWorker } from "./support/harness.ts"

const Square = Job.make("square", {
  args: Schema.Struct({ n: Schema.Number }),
  success: Schema.Struct({ squared: Schema.Number, at: Schema.Date }),
  queue: "r-square",
  maxAttempts: 1
})

const Blocked = Job.make("blocked", { args: Schema.Struct({}), queue: "r-cancel" })

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

/**
 * Waits (at most 10 s) until a session of this test's database listens for cancel requests: the
 * worker's, once its LISTEN is in place. A bare NOTIFY sent before that is lost (it leaves no
 * request in the table for the control poll to find).
 */
const cancelListening = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<{ readonly n: number }>`
    SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND state = 'idle' AND query = 'LISTEN "effect_jobs_cancel"'`.pipe(
    Effect.repeat({ until: (rows) => (rows[0]?.n ?? 0) > 0, schedule: Schedule.spaced("10 millis") }),
    Effect.timeoutOrElse({
      duration: "10 seconds",
      orElse: () => Effect.die(new Error("no session listens on effect_jobs_cancel"))
    })
  ))

layer(TestLayer, { excludeTestServices: true })("results", (it) => {
  const startSquares = startWorker(
    { queues: { "r-square": { concurrency: 4 } }, gracePeriod: "100 millis" },
    Job.toLayer(Square, ({ n }, ctx) =>
      Effect.gen(function*() {
        if (n < 0) return yield* Job.discard("negative")
        if (n === 13) return yield* Job.cancel("unlucky")
        if (n === 99) return yield* Effect.never
        return { squared: n * n, at: ctx.enqueuedAt }
      }))
  )

  it.effect("await returns the decoded typed result; status shows it too", () =>
    Effect.gen(function*() {
      yield* startSquares
      const jobs = yield* Jobs
      const id = yield* jobs.enqueue(Square, { n: 12 })
      const result = yield* jobs.await(Square, id, { timeout: "20 seconds" })
      assert.strictEqual(result.squared, 144)
      assert.instanceOf(result.at, Date, "decoded by the success Schema (Date from its JSON form)")
      const status = yield* jobs.status(Square, id)
      assert.strictEqual(status.state, "completed")
      assert.deepStrictEqual(status.result._tag === "Some" ? status.result.value.squared : undefined, 144)
    }))

  it.effect("await fails with JobDead, JobCancelled, AwaitTimeout, JobNotFound", () =>
    Effect.gen(function*() {
      yield* startSquares
      const jobs = yield* Jobs
      const [dead, cancelled, stuck] = yield* jobs.enqueueMany(Square, [{ n: -1 }, { n: 13 }, { n: 99 }])
      const e1 = yield* Effect.flip(jobs.await(Square, dead!, { timeout: "20 seconds" }))
      assert.strictEqual(e1._tag, "JobDead")
      const e2 = yield* Effect.flip(jobs.await(Square, cancelled!, { timeout: "20 seconds" }))
      assert.strictEqual(e2._tag, "JobCancelled")
      const e3 = yield* Effect.flip(jobs.await(Square, stuck!, { timeout: "100 millis" }))
      assert.strictEqual(e3._tag, "AwaitTimeout")
      const e4 = yield* Effect.flip(jobs.await(Square, "999999999", { timeout: "5 seconds" }))
      assert.strictEqual(e4._tag, "JobNotFound")
      const e5 = yield* Effect.flip(jobs.status(Square, "999999999"))
      assert.strictEqual(e5._tag, "JobNotFound")
    }))

  it.effect("many awaiters of many jobs are all woken", () =>
    Effect.gen(function*() {
      yield* startSquares
      const jobs = yield* Jobs
      const ids = yield* jobs.enqueueMany(Square, Array.from({ length: 50 }, (_, n) => ({ n: n + 14 })))
      const results = yield* Effect.forEach(ids, (id) => jobs.await(Square, id, { timeout: "30 seconds" }), {
        concurrency: "unbounded"
      })
      assert.deepStrictEqual(results.map((r) => r.squared), Array.from({ length: 50 }, (_, n) => (n + 14) * (n + 14)))
    }))

  it.effect("cancelling a running job interrupts its handler (finalizer runs) and ends it cancelled", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const finalized = yield* Deferred.make<void>()
      yield* startWorker(
        { queues: { "r-cancel": { concurrency: 1 } } },
        Job.toLayer(Blocked, () =>
          Effect.andThen(Deferred.succeed(started, undefined), Effect.never).pipe(
            Effect.ensuring(Deferred.succeed(finalized, undefined))
          ))
      )
      const jobs = yield* Jobs
      const id = yield* jobs.enqueue(Blocked, {})
      yield* Deferred.await(started)
      yield* cancelListening
      const sql = yield* SqlClient.SqlClient
      const t0 = Date.now()
      yield* sql`SELECT pg_notify('effect_jobs_cancel', ${id})`
      const error = yield* Effect.flip(jobs.await(Blocked, id, { timeout: "20 seconds" }))
      const elapsed = Date.now() - t0
      assert.strictEqual(error._tag, "JobCancelled")
      assert.isTrue(yield* Deferred.isDone(finalized), "the handler's finalizer ran")
      const row = yield* getJob(id)
      assert.strictEqual(row?.state, "cancelled")
      assert.strictEqual(row?.attempt, 1)
      console.log(`cancel of a running job took ${elapsed} ms (notify -> await woke)`)
    }))
})
