/**
 * Typed results, `Jobs.status` and `Jobs.await`; cancelling a running job by NOTIFY.
 *
 * The second block runs on a TestClock that is never moved: there `Jobs.await`'s one-second
 * re-check and the workers' polls (claims, control poll) never come round, so an await that
 * returns, or a cancel that lands, got there by NOTIFY. Broken NOTIFY = a test that hangs
 * until its timeout.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Schedule, Schema, Tracer } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { Job, Jobs, JobsAdmin, Worker } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { getJob, startWorker } from "./support/harness.ts"
import { startOfNextSecond, withTestClock } from "./support/probes.ts"

const Square = Job.make("square", {
  args: Schema.Struct({ n: Schema.Number }),
  success: Schema.Struct({ squared: Schema.Number, at: Schema.Date }),
  queue: "r-square",
  maxAttempts: 1
})

const Blocked = Job.make("blocked", { args: Schema.Struct({}), queue: "r-cancel" })

/** Runs when the test opens its gate; then completes (`n` squared) or fails (one attempt: dead). */
const Gated = Job.make("gated", {
  args: Schema.Struct({ n: Schema.Number, fail: Schema.Boolean }),
  success: Schema.Struct({ squared: Schema.Number }),
  queue: "r-gated",
  maxAttempts: 1
})

/** Blocks until cancelled; `i` tells the test which job a worker runs. */
const Held = Job.make("held", { args: Schema.Struct({ i: Schema.Number }), queue: "r-cancel-many", maxAttempts: 1 })

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

/** For the TestClock block: a database of its own, hence a `Jobs` (and its await listener) of its own. */
const ClockLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer).pipe(Layer.provideMerge(TestDb.layer()))

/**
 * Waits (at most 10 s) until `workers` sessions of this test's database listen for cancel
 * requests: the workers', once their LISTEN is in place. A NOTIFY sent before that is lost: a
 * bare one leaves no request in the table at all, and a request recorded by `JobsAdmin.cancel`
 * is then found only by the control poll, which a stopped TestClock never runs. (Polls on the
 * clock it finds: under a TestClock, run it with `TestClock.withLive`.)
 */
const cancelListening = (workers: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND state = 'idle' AND query = 'LISTEN "effect_jobs.cancel"'`.pipe(
      Effect.repeat({ until: (rows) => (rows[0]?.n ?? 0) >= workers, schedule: Schedule.spaced("10 millis") }),
      Effect.timeoutOrElse({
        duration: "10 seconds",
        orElse: () => Effect.die(new Error(`fewer than ${workers} sessions listen on effect_jobs.cancel`))
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
      const jobs = yield* Jobs.Jobs
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
      const jobs = yield* Jobs.Jobs
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
      const jobs = yield* Jobs.Jobs
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
      const jobs = yield* Jobs.Jobs
      const id = yield* jobs.enqueue(Blocked, {})
      yield* Deferred.await(started)
      yield* cancelListening(1)
      const sql = yield* SqlClient.SqlClient
      const t0 = Date.now()
      yield* sql`SELECT pg_notify('effect_jobs.cancel', ${id})`
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

/**
 * Starts the listener of `Jobs.await` (it is started on first use): awaiting a job that does not
 * exist starts it and returns `JobNotFound` at once. Afterwards each await makes one statement of
 * its own, its look at the job, before it waits; the listener's first look and the first run of
 * the one-second re-check belong to this call, not to the await under test.
 */
const startAwaitListener = Effect.gen(function*() {
  const e = yield* Effect.flip((yield* Jobs.Jobs).await(Gated, "999999999"))
  assert.strictEqual(e._tag, "JobNotFound")
})

/**
 * Starts `Jobs.await(job, id)` in a fiber of its own and returns it once that await's look at the
 * job has returned. The look is seen through a tracer given to that fiber alone: every SQL
 * statement is a span carrying its text (`db.query.text`). After the look, on a stopped clock,
 * nothing but a NOTIFY on the done channel can wake the await.
 */
const awaitAfterItsLook = <J extends Job.Any>(job: J, id: string) =>
  Effect.gen(function*() {
    const jobs = yield* Jobs.Jobs
    const looked = yield* Deferred.make<void>()
    class LookSpan extends Tracer.NativeSpan {
      override end(endTime: bigint, exit: Exit.Exit<unknown, unknown>) {
        super.end(endTime, exit)
        const text = this.attributes.get("db.query.text")
        if (typeof text === "string" && /\bFROM "effect_jobs"\.jobs\b/.test(text)) Deferred.doneUnsafe(looked, Exit.void)
      }
    }
    const tracer = Tracer.make({ span: (options) => new LookSpan(options) })
    const fiber = yield* Effect.forkChild(Effect.provideService(jobs.await(job, id), Tracer.Tracer, tracer))
    yield* Deferred.await(looked)
    return fiber
  })

layer(ClockLayer, { excludeTestServices: true })("results on a stopped TestClock (NOTIFY only)", (it) => {
  /** A worker for `Gated`: reports each job it starts, and holds it until `gate` opens. */
  const startGated = Effect.gen(function*() {
    const started = yield* Deferred.make<string>()
    const gate = yield* Deferred.make<void>()
    yield* startWorker(
      { queues: { "r-gated": { concurrency: 1 } }, pruner: false },
      Job.toLayer(Gated, ({ fail, n }, ctx) =>
        Deferred.succeed(started, ctx.id).pipe(
          Effect.andThen(Deferred.await(gate)),
          Effect.andThen(fail ? Effect.fail("told to fail") : Effect.succeed({ squared: n * n }))
        ))
    )
    // Runs before the worker's shutdown (finalizers run last-added first): a test that failed with
    // the gate shut would otherwise leave its shutdown waiting for the grace period on the stopped clock.
    yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
    return { started, gate }
  })

  /**
   * Enqueues a `Gated` job, waits until it runs and the await's look at it has returned (it is
   * still running then), and only then lets it finish: the await can only learn of the end by NOTIFY.
   */
  const awaitThenFinish = (args: { readonly n: number; readonly fail: boolean }) =>
    Effect.gen(function*() {
      yield* startAwaitListener
      const { gate, started } = yield* startGated
      const id = yield* (yield* Jobs.Jobs).enqueue(Gated, args)
      assert.strictEqual(yield* Deferred.await(started), id)
      const waiting = yield* awaitAfterItsLook(Gated, id)
      assert.strictEqual((yield* getJob(id))?.state, "running", "not finished when the await looked")
      yield* Deferred.succeed(gate, undefined)
      return { id, waiting }
    })

  it.effect("await returns the result of a job that completes after the await looked (woken by NOTIFY)", () =>
    withTestClock(
      startOfNextSecond(),
      Effect.gen(function*() {
        const { id, waiting } = yield* awaitThenFinish({ n: 7, fail: false })
        const result = yield* Fiber.join(waiting)
        assert.strictEqual(result.squared, 49)
        assert.strictEqual((yield* getJob(id))?.state, "completed")
      })
    ), { timeout: 15_000 })

  it.effect("await fails with JobDead for a job that ends dead after the await looked (woken by NOTIFY)", () =>
    withTestClock(
      startOfNextSecond(),
      Effect.gen(function*() {
        const { id, waiting } = yield* awaitThenFinish({ n: 3, fail: true })
        const error = yield* Effect.flip(Fiber.join(waiting))
        assert.strictEqual(error._tag, "JobDead")
        assert.include(error._tag === "JobDead" ? error.message : "", "told to fail")
        assert.strictEqual((yield* getJob(id))?.state, "dead")
      })
    ), { timeout: 15_000 })

  it.effect("JobsAdmin.cancel of one of three running jobs, each on its own worker, interrupts that one only", () =>
    withTestClock(
      startOfNextSecond(),
      Effect.gen(function*() {
        const workers = 3
        // which worker started job i; which jobs' handlers were interrupted, in order
        const started = yield* Effect.forEach(Array.from({ length: workers }, (_, i) => i), () => Deferred.make<number>())
        const interrupted: Array<number> = []
        const running: Array<Effect.Effect<number>> = []
        // Opened only by the teardown, if the test failed before cancelling all three (see below).
        const teardown = yield* Deferred.make<void>()
        for (let w = 0; w < workers; w++) {
          // An independent worker (a pool of its own, as another process would have); prefetch 0
          // and concurrency 1, so each claims one job. Its control poll runs once as it starts, long
          // before there is a cancel request to find, then waits on the stopped clock: a cancel comes
          // by NOTIFY or not at all.
          const context = yield* startWorker(
            { queues: { "r-cancel-many": { concurrency: 1, prefetch: 0 } }, pruner: false },
            Layer.merge(
              Job.toLayer(Held, ({ i }) =>
                Deferred.succeed(started[i]!, w).pipe(
                  Effect.andThen(Deferred.await(teardown)), // blocked: within the test, only an interrupt ends it
                  Effect.onInterrupt(() => Effect.sync(() => interrupted.push(i)))
                )),
              Layer.fresh(TestDb.pool({ maxConnections: 4, connectTimeout: Duration.infinity }))
            )
          )
          running.push(Context.get(context, Worker.Worker).running)
        }
        // Runs before the workers' shutdowns: a job still blocked there would keep its worker's
        // shutdown waiting for the grace period on the stopped clock. (A passing test cancelled them all.)
        yield* Effect.addFinalizer(() => Deferred.succeed(teardown, undefined))
        const jobs = yield* Jobs.Jobs
        const admin = yield* JobsAdmin.JobsAdmin
        const ids = yield* jobs.enqueueMany(Held, Array.from({ length: workers }, (_, i) => ({ i })))
        const ranOn = yield* Effect.forEach(started, Deferred.await)
        assert.sameMembers(ranOn, [0, 1, 2], "each job runs on a different worker")
        yield* TestClock.withLive(cancelListening(workers))

        const t0 = Date.now()
        assert.strictEqual(yield* admin.cancel(ids[1]!), "cancelRequested")
        const error = yield* Effect.flip(jobs.await(Held, ids[1]!))
        const elapsed = Date.now() - t0
        assert.strictEqual(error._tag, "JobCancelled")
        assert.deepStrictEqual(interrupted, [1], "only the cancelled job's handler was interrupted")
        const row = yield* getJob(ids[1]!)
        assert.strictEqual(row?.state, "cancelled")
        assert.strictEqual(row?.attempt, 1)
        assert.strictEqual((yield* getJob(ids[0]!))?.state, "running")
        assert.strictEqual((yield* getJob(ids[2]!))?.state, "running")
        assert.deepStrictEqual(
          yield* Effect.all(running),
          running.map((_, w) => (w === ranOn[1] ? 0 : 1)),
          "the worker of the cancelled job runs nothing; the other two still run theirs"
        )
        console.log(`cancel of a running job among ${workers} workers took ${elapsed} ms (JobsAdmin.cancel -> await woke)`)

        // Stop the other two the same way (each cancel again reaches its own job only): the workers
        // shut down with nothing running.
        for (const i of [0, 2]) {
          assert.strictEqual(yield* admin.cancel(ids[i]!), "cancelRequested")
          assert.strictEqual((yield* Effect.flip(jobs.await(Held, ids[i]!)))._tag, "JobCancelled")
        }
        assert.deepStrictEqual(interrupted, [1, 0, 2])
        assert.deepStrictEqual(yield* Effect.all(running), [0, 0, 0])
      })
    ), { timeout: 20_000 })
})
