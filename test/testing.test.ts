/**
 * The test kit: the inline layer (handlers run at once in the caller's fiber,
 * no database), the ignore layer (jobs checked, recorded, dropped), and drain
 * (a real worker until nothing runnable is left).
 */
import { assert, describe, expect, it, layer } from "@effect/vitest"
import { Cause, Clock, Context, Deferred, Duration, Effect, Exit, Layer, Option, Schedule, Schema } from "effect"
import { TestClock } from "effect/testing"
import { InlineJobFailed, Job, Jobs, Testing, Worker } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { countByState, getJob } from "./support/harness.ts"

class Declined extends Schema.TaggedError<Declined>()("Declined", { reason: Schema.String }) {}

const Greet = Job.make("testing-greet", {
  args: Schema.Struct({ name: Schema.String, at: Schema.Date }),
  success: Schema.Struct({ greeting: Schema.String }),
  queue: "testing"
})
const Charge = Job.make("testing-charge", { args: Schema.Struct({ cents: Schema.Int }), queue: "testing" })
const Unwanted = Job.make("testing-unwanted", { args: Schema.Struct({}), queue: "testing" })

const calls: Array<string> = []
const Handlers = Layer.mergeAll(
  Job.toLayer(Greet, (args, ctx) =>
    Effect.sync(() => {
      calls.push(`greet ${args.name} ${args.at instanceof Date ? "Date" : typeof args.at} attempt ${ctx.attempt}`)
      return { greeting: `hello ${args.name}` }
    })),
  Job.toLayer(Charge, (args) => args.cents > 1000 ? Effect.fail(new Declined({ reason: "too much" })) : Effect.void),
  Job.toLayer(Unwanted, () => Job.cancel("not today"))
)

describe("Testing.layerInline", () => {
  const Inline = Testing.layerInline.pipe(Layer.provide(Handlers))

  it.effect("enqueue runs the handler at once, in the caller's fiber, with the args through their Schema", () =>
    Effect.gen(function*() {
      calls.length = 0
      const jobs = yield* Jobs.Jobs
      const id = yield* jobs.enqueue(Greet, { name: "ada", at: new Date(0) })
      assert.deepStrictEqual(calls, ["greet ada Date attempt 1"], "already ran when enqueue returned")
      assert.deepStrictEqual(yield* jobs.await(Greet, id), { greeting: "hello ada" })
      const status = yield* jobs.status(Greet, id)
      assert.strictEqual(status.state, "completed")
      assert.deepStrictEqual(Option.getOrUndefined(status.result), { greeting: "hello ada" })
      const [recorded] = yield* Effect.flatMap(Testing.Enqueued, (e) => e.of(Greet))
      assert.strictEqual(recorded?.args.name, "ada")
      assert.deepStrictEqual(recorded?.outcome, { _tag: "completed", value: { greeting: "hello ada" } })
    }).pipe(Effect.provide(Inline)))

  it.effect("a failing handler makes the enqueue die (default), or is recorded (onFailure: record)", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.flatMap(Jobs.Jobs, (jobs) => jobs.enqueue(Charge, { cents: 5000 })).pipe(Effect.provide(Inline)))
      assert.isTrue(Exit.isFailure(exit))
      const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      assert.instanceOf(defect, InlineJobFailed)
      const failed = defect as InlineJobFailed
      assert.strictEqual(failed._tag, "InlineJobFailed")
      assert.strictEqual(failed.job, "testing-charge")
      const reason = failed.jobCause.reasons.find(Cause.isFailReason)
      assert.deepStrictEqual(reason?.error, new Declined({ reason: "too much" }), "the run's Cause, with the handler's typed failure")
      expect(failed.message).toContain('job "testing-charge" failed')
      expect(failed.message).toContain("Declined")

      const recording = Testing.layerInlineWith({ onFailure: "record" }).pipe(Layer.provide(Handlers))
      yield* Effect.gen(function*() {
        const jobs = yield* Jobs.Jobs
        const id = yield* jobs.enqueue(Charge, { cents: 5000 })
        const [r] = yield* Effect.flatMap(Testing.Enqueued, (e) => e.all)
        assert.strictEqual(r?.id, id)
        assert.strictEqual(r?.outcome?._tag, "retryScheduled", "a worker would retry it")
        assert.strictEqual((yield* jobs.status(Charge, id)).state, "scheduled")
      }).pipe(Effect.provide(recording))
    }))

  it.effect("deliberate outcomes are recorded, not defects: Job.cancel -> cancelled, await fails with JobCancelled", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const id = yield* jobs.enqueue(Unwanted, {})
      const error = yield* Effect.flip(jobs.await(Unwanted, id))
      assert.strictEqual(error._tag, "JobCancelled")
      assert.strictEqual((yield* jobs.status(Unwanted, id)).state, "cancelled")
    }).pipe(Effect.provide(Inline)))

  it.effect("bad arguments are the same typed errors as with a database, and nothing runs", () =>
    Effect.gen(function*() {
      calls.length = 0
      const jobs = yield* Jobs.Jobs
      const error = yield* Effect.flip(jobs.enqueue(Greet, { name: 42, at: new Date(0) } as never))
      assert.strictEqual(error._tag, "InvalidJobArgs")
      const options = yield* Effect.flip(jobs.enqueue(Charge, { cents: 1 }, { priority: 1e9 }))
      assert.strictEqual(options._tag, "InvalidJobOptions")
      assert.deepStrictEqual(calls, [])
      assert.lengthOf(yield* Effect.flatMap(Testing.Enqueued, (e) => e.all), 0)
      assert.strictEqual((yield* Effect.flip(jobs.status(Greet, "12345")))._tag, "JobNotFound")
    }).pipe(Effect.provide(Inline)))
})

describe("Testing.layerIgnore", () => {
  it.effect("enqueue checks and records the job, then drops it: no handler, no database", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const ids = yield* jobs.enqueueMany(Charge, [{ cents: 1 }, { cents: 2 }], { delay: "1 hour" })
      assert.deepStrictEqual(ids, ["1", "2"])
      const enqueued = yield* Testing.Enqueued
      const charges = yield* enqueued.of(Charge)
      assert.deepStrictEqual(charges.map((r) => r.args.cents), [1, 2])
      assert.deepStrictEqual(charges.map((r) => r.outcome), [undefined, undefined])
      assert.strictEqual((yield* jobs.status(Charge, ids[0]!)).state, "available")
      const bad = yield* Effect.flip(jobs.enqueueAll([
        Jobs.entry(Charge, { cents: 3 }),
        Jobs.entry(Charge, { cents: 1.5 })
      ]))
      assert.strictEqual(bad._tag, "InvalidJobArgs")
      assert.lengthOf(yield* enqueued.all, 2, "all or nothing: the valid one of a bad batch is not recorded")
      const bundle = yield* jobs.enqueueBundle({ name: "nightly" }, [Jobs.entry(Charge, { cents: 4 })])
      assert.strictEqual((yield* jobs.bundleProgress(bundle.bundleId)).remaining, 1)
      yield* enqueued.clear
      assert.lengthOf(yield* enqueued.all, 0)
    }).pipe(Effect.provide(Testing.layerIgnore)))
})

layer(Jobs.layer.pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })("Testing.drain", (it) => {
  const Flaky = Job.make("testing-flaky", {
    args: Schema.Struct({ i: Schema.Number }),
    queue: "testing-drain",
    retry: Schedule.spaced("1 hour"),
    maxAttempts: 3
  })
  const Later = Job.make("testing-later", { args: Schema.Struct({}), queue: "testing-drain" })
  const DrainHandlers = Layer.mergeAll(
    Job.toLayer(Flaky, (args, ctx) => args.i === 0 && ctx.attempt === 1 ? Effect.fail(new Declined({ reason: "once" })) : Effect.void),
    Job.toLayer(Later, () => Effect.void)
  )

  it.effect("runs a real worker until nothing runnable is left; withScheduled runs later jobs too", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(Flaky, [0, 1, 2, 3, 4].map((i) => ({ i })))
      yield* jobs.enqueue(Later, {}, { delay: "1 day" })

      const first = yield* Testing.drain({ queues: ["testing-drain"] }).pipe(Effect.provide(DrainHandlers))
      assert.deepStrictEqual(first, { completed: 4, retried: 1, rescheduled: 0, dead: 0, cancelled: 0 })
      assert.deepStrictEqual(yield* countByState("testing-drain"), { completed: 4, scheduled: 2 }, "the retry and the later job wait")

      const second = yield* Testing.drain({ queues: { "testing-drain": { concurrency: 2 } }, withScheduled: true }).pipe(
        Effect.provide(DrainHandlers)
      )
      assert.deepStrictEqual(second, { completed: 2, retried: 0, rescheduled: 0, dead: 0, cancelled: 0 })
      assert.deepStrictEqual(yield* countByState("testing-drain"), { completed: 6 })
    }))

  // On a TestClock: a job that fails twice, its retries 1 hour then 2 hours later, and one enqueued
  // for a day later. Nothing here could finish within the test's timeout on a real clock.
  const Backoff = Job.make("testing-backoff", {
    args: Schema.Struct({}),
    queue: "testing-clock",
    retry: Schedule.exponential("1 hour"),
    maxAttempts: 5
  })
  const Tomorrow = Job.make("testing-tomorrow", { args: Schema.Struct({}), queue: "testing-clock" })
  /** Handlers that record the attempt and the (virtual) time of each run. */
  const clockHandlers = (runs: Array<{ readonly job: string; readonly attempt: number; readonly at: number }>) =>
    Layer.mergeAll(
      Job.toLayer(Backoff, (_, ctx) =>
        Effect.gen(function*() {
          runs.push({ job: "backoff", attempt: ctx.attempt, at: yield* Clock.currentTimeMillis })
          if (ctx.attempt <= 2) return yield* new Declined({ reason: `attempt ${ctx.attempt}` })
        })),
      Job.toLayer(Tomorrow, (_, ctx) =>
        Effect.gen(function*() {
          runs.push({ job: "tomorrow", attempt: ctx.attempt, at: yield* Clock.currentTimeMillis })
        }))
    )
  const hour = 3_600_000

  it.effect("advanceTestClock: on a TestClock, drain moves the clock to each retry and delayed job and runs it when due", () => {
    const t0 = Date.parse("2030-01-01T00:00:00.000Z")
    return Testing.withTestClock(
      t0,
      Effect.gen(function*() {
        const runs: Array<{ readonly job: string; readonly attempt: number; readonly at: number }> = []
        const jobs = yield* Jobs.Jobs
        const id = yield* jobs.enqueue(Backoff, {})
        const later = yield* jobs.enqueue(Tomorrow, {}, { delay: "1 day" })

        const result = yield* Testing.drain({ queues: ["testing-clock"], advanceTestClock: true }).pipe(
          Effect.provide(clockHandlers(runs))
        )
        assert.deepStrictEqual(result, { completed: 2, retried: 2, rescheduled: 0, dead: 0, cancelled: 0 })
        // each run at the virtual time it was due: the backoff counted from each failure
        assert.deepStrictEqual(runs, [
          { job: "backoff", attempt: 1, at: t0 },
          { job: "backoff", attempt: 2, at: t0 + hour },
          { job: "backoff", attempt: 3, at: t0 + hour + 2 * hour },
          { job: "tomorrow", attempt: 1, at: t0 + 24 * hour }
        ])
        assert.strictEqual(yield* Clock.currentTimeMillis, t0 + 24 * hour, "the clock stopped at the last job it ran")
        const row = yield* getJob(id)
        assert.strictEqual(row?.state, "completed")
        assert.strictEqual(row?.attempt, 3)
        assert.deepStrictEqual(row?.errors.map((e) => [e.attempt, e.kind]), [[1, "Declined"], [2, "Declined"]])
        assert.strictEqual((yield* getJob(later))?.state, "completed")
        assert.deepStrictEqual(yield* countByState("testing-clock"), { completed: 2 })
      })
    )
  })

  it.effect("withScheduled on a TestClock that stands still: the retries run at once, the clock does not move", () => {
    const t0 = Date.parse("2030-06-01T00:00:00.000Z")
    return Testing.withTestClock(
      t0,
      Effect.gen(function*() {
        const runs: Array<{ readonly job: string; readonly attempt: number; readonly at: number }> = []
        const id = yield* (yield* Jobs.Jobs).enqueue(Backoff, {})
        const result = yield* Testing.drain({ queues: ["testing-clock"], withScheduled: true }).pipe(
          Effect.provide(clockHandlers(runs))
        )
        assert.deepStrictEqual(result, { completed: 1, retried: 2, rescheduled: 0, dead: 0, cancelled: 0 })
        assert.deepStrictEqual(runs.map((r) => [r.attempt, r.at]), [[1, t0], [2, t0], [3, t0]])
        assert.strictEqual(yield* Clock.currentTimeMillis, t0)
        assert.strictEqual((yield* getJob(id))?.attempt, 3)
      })
    )
  })

  it.effect("without advanceTestClock a TestClock is left alone: the retry an hour later stays scheduled", () => {
    const t0 = Date.parse("2030-09-01T00:00:00.000Z")
    return Testing.withTestClock(
      t0,
      Effect.gen(function*() {
        const runs: Array<{ readonly job: string; readonly attempt: number; readonly at: number }> = []
        const id = yield* (yield* Jobs.Jobs).enqueue(Backoff, {})
        const result = yield* Testing.drain({ queues: ["testing-clock"] }).pipe(Effect.provide(clockHandlers(runs)))
        assert.deepStrictEqual(result, { completed: 0, retried: 1, rescheduled: 0, dead: 0, cancelled: 0 })
        assert.strictEqual(yield* Clock.currentTimeMillis, t0)
        const row = yield* getJob(id)
        assert.strictEqual(row?.state, "scheduled")
        assert.strictEqual(row?.run_at.getTime(), t0 + hour)
        // moved by hand to the retry, the next drain runs it (at that time), and stops at the next retry
        yield* TestClock.adjust("1 hour")
        const second = yield* Testing.drain({ queues: ["testing-clock"] }).pipe(Effect.provide(clockHandlers(runs)))
        assert.deepStrictEqual(second, { completed: 0, retried: 1, rescheduled: 0, dead: 0, cancelled: 0 })
        assert.deepStrictEqual(runs.map((r) => [r.attempt, r.at]), [[1, t0], [2, t0 + hour]])
        assert.strictEqual((yield* getJob(id))?.run_at.getTime(), t0 + 3 * hour)
      })
    )
  })

  it.effect("advanceTestClock and advanceUntil die without a TestClock (this suite runs on the live clock)", () =>
    Effect.gen(function*() {
      const drained = yield* Effect.exit(Testing.drain({ queues: ["testing-clock"], advanceTestClock: true }))
      assert.isTrue(Exit.isFailure(drained) && Cause.hasDies(drained.cause))
      expect(String(Exit.isFailure(drained) ? Cause.squash(drained.cause) : "")).toContain("needs a TestClock")
      const advanced = yield* Effect.exit(Testing.advanceUntil(Effect.succeed(Option.some(1))))
      expect(String(Exit.isFailure(advanced) ? Cause.squash(advanced.cause) : "")).toContain("needs a TestClock")
    }))

  // The worker's registration (its session lock and the fence that stops its runs when it cannot
  // confirm it) is about real time. On the TestClock, a jump of a day woke the 500 ms beat and the
  // 100 ms fence check for every virtual step (examples/testing.ts ran past its 60 s timeout), and
  // the fence, seeing a day without confirmation, stopped the job running across the jump.
  it.effect("a worker on a TestClock keeps running its job across a jump of a day", () => {
    const t0 = Date.parse("2030-03-01T00:00:00.000Z")
    const Long = Job.make("testing-long", { args: Schema.Struct({}), queue: "testing-jump" })
    return Testing.withTestClock(
      t0,
      Effect.gen(function*() {
        const started = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const handler = Job.toLayer(Long, () => Deferred.succeed(started, undefined).pipe(Effect.andThen(Deferred.await(release))))
        yield* Layer.build(Worker.layer({ queues: { "testing-jump": {} } }).pipe(Layer.provide(handler)))
        const jobs = yield* Jobs.Jobs
        const id = yield* jobs.enqueue(Long, {})
        yield* Deferred.await(started)
        yield* TestClock.setTime(t0 + 24 * hour)
        yield* Deferred.succeed(release, undefined)
        yield* jobs.await(Long, id)
        const row = yield* getJob(id)
        assert.strictEqual(row?.state, "completed")
        assert.strictEqual(row?.attempt, 1)
        assert.deepStrictEqual(row?.errors, [])
      }).pipe(Effect.scoped)
    )
  })

  // Every sleep on a TestClock runs when the clock is moved past it, one after another. A
  // worker's loops that ticked with nothing to do (the settings reader with no setting to read,
  // the throughput writer with nothing tallied, Jobs.await's re-check with nobody waiting) ran
  // 86,400 rounds each through a jump of a day: seconds of CPU, during which the worker's
  // real-time registration could not confirm itself and its fence stopped a running job.
  it.effect("an idle worker and Jobs on a TestClock do not tick through every second of a jump", () => {
    const t0 = Date.parse("2030-04-01T00:00:00.000Z")
    const Quick = Job.make("testing-idle", { args: Schema.Struct({}), queue: "testing-idle" })
    return Testing.withTestClock(
      t0,
      Effect.gen(function*() {
        const testClock = yield* TestClock.testClockWith(Effect.succeed)
        let sleeps = 0
        // the TestClock, counting the sleeps the worker and Jobs take on it
        const counting: Clock.Clock = Object.assign(Object.create(testClock) as Clock.Clock, {
          sleep: (duration: Duration.Duration) => {
            sleeps++
            return testClock.sleep(duration)
          }
        })
        const context = yield* Layer.build(
          Layer.mergeAll(
            Worker.layer({ queues: { "testing-idle": {} } }).pipe(Layer.provide(Job.toLayer(Quick, () => Effect.void))),
            Jobs.layer
          )
        ).pipe(Effect.provideService(Clock.Clock, counting))
        const jobs = Context.get(context, Jobs.Jobs)
        // A job run and awaited: the throughput writer has tallied, the await's re-check started.
        yield* jobs.await(Quick, yield* jobs.enqueue(Quick, {}))
        yield* TestClock.adjust("2 seconds") // (the last tallies written)
        const before = sleeps
        yield* TestClock.setTime(t0 + 24 * hour)
        // What is left ticks only while a statement of its own is not in flight (the producer's
        // poll, the maintenance round, the control poll): a handful per jump, not 86,400 per loop.
        expect(sleeps - before).toBeLessThan(1000)
        // and the worker still works after the jump
        yield* jobs.await(Quick, yield* jobs.enqueue(Quick, {}))
      }).pipe(Effect.scoped)
    )
  })

  it.effect("an empty queue drains at once", () =>
    Effect.gen(function*() {
      const result = yield* Testing.drain({ queues: ["testing-empty"] }).pipe(Effect.provide(DrainHandlers))
      assert.deepStrictEqual(result, { completed: 0, retried: 0, rescheduled: 0, dead: 0, cancelled: 0 })
    }))
})
