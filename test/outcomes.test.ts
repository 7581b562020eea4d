/**
 * Every outcome a handler can produce (DESIGN "Jobs and handlers"), checked on
 * the job's row after the worker reports it (the Observer fires only after the
 * outcome is written). Tests that need time to pass run on a TestClock.
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Deferred, Effect, Layer, Option, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs, RequestId, type Worker } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { advanceUntil, delayAfter, makeProbe, row, startOfNextSecond, withTestClock } from "./support/probes.ts"

class Flaky extends Schema.TaggedError<Flaky>()("Flaky", { message: Schema.String }) {}

/** A worker on one queue that notices scheduled jobs quickly (live-clock tests). */
const fastWorker = (queue: string, concurrency = 1): Worker.Options => ({
  queues: { [queue]: { concurrency, pollInterval: "20 millis" } },
  maintenanceInterval: "20 millis"
})

/** A worker on one queue for TestClock tests: maintenance every 100 ms of virtual time. */
const clockWorker = (queue: string): Worker.Options => ({
  queues: { [queue]: { pollInterval: "1 second" } },
  maintenanceInterval: "100 millis"
})

const hasIso = (s: string) => !Number.isNaN(Date.parse(s))

// --- success ---------------------------------------------------------------------------------

const Doubler = Job.make("outcomes-doubler", {
  args: Schema.Struct({ n: Schema.Number, at: Schema.Date }),
  success: Schema.Struct({ doubled: Schema.Number, big: Schema.BigInt, at: Schema.Date }),
  queue: "o-success"
})
const NoResult = Job.make("outcomes-no-result", { args: Schema.Struct({ n: Schema.Number }), queue: "o-success" })
const BadResult = Job.make("outcomes-bad-result", {
  args: Schema.Struct({}),
  success: Schema.Struct({ count: Schema.Int }),
  queue: "o-success",
  maxAttempts: 5
})

// --- failures and control outcomes ---------------------------------------------------------------

const Backoff = Job.make("outcomes-backoff", {
  args: Schema.Struct({}),
  queue: "o-backoff",
  maxAttempts: 4,
  retry: Schedule.exponential("1 second")
})
const KeepTwo = Job.make("outcomes-keep-two", {
  args: Schema.Struct({}),
  queue: "o-keep-two",
  maxAttempts: 4,
  maxErrors: 2,
  retry: Schedule.spaced("1 millis")
})
const RetryLater = Job.make("outcomes-retry-after", {
  args: Schema.Struct({}),
  queue: "o-retry-after",
  maxAttempts: 3,
  retry: Schedule.exponential("1 second")
})
const RetryLast = Job.make("outcomes-retry-after-last", {
  args: Schema.Struct({}),
  queue: "o-retry-after-last",
  maxAttempts: 1
})
const Sleepy = Job.make("outcomes-snooze", { args: Schema.Struct({}), queue: "o-snooze", maxAttempts: 1 })
const Discarded = Job.make("outcomes-discard", { args: Schema.Struct({}), queue: "o-discard", maxAttempts: 5 })
const Cancelled = Job.make("outcomes-cancel", { args: Schema.Struct({}), queue: "o-cancel", maxAttempts: 5 })
const Dies = Job.make("outcomes-die", { args: Schema.Struct({}), queue: "o-defect", maxAttempts: 5 })
const Throws = Job.make("outcomes-throw", { args: Schema.Struct({}), queue: "o-defect", maxAttempts: 5 })
const Slow = Job.make("outcomes-timeout", {
  args: Schema.Struct({}),
  queue: "o-timeout",
  maxAttempts: 2,
  timeout: "1 second",
  retry: Schedule.exponential("1 second")
})

// --- context and arrival -------------------------------------------------------------------------

const Context_ = Job.make("outcomes-context", { args: Schema.Struct({ n: Schema.Number }), queue: "o-ctx" })
const Strict = Job.make("outcomes-strict-args", {
  args: Schema.Struct({ n: Schema.Number }),
  queue: "o-bad-args",
  maxAttempts: 5
})

const FileLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

layer(FileLayer, { excludeTestServices: true })("handler outcomes", (it) => {
  it.effect("success -> completed, with the result encoded by the success Schema", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const seen: Array<{ n: number; at: Date }> = []
      yield* startWorker(
        fastWorker("o-success"),
        Layer.mergeAll(
          Job.toLayer(Doubler, (args) =>
            Effect.sync(() => {
              seen.push(args)
              return { doubled: args.n * 2, big: 12345678901234567890n, at: new Date(args.at.getTime() + 1000) }
            })),
          Job.toLayer(NoResult, () => Effect.void),
          probe.layer
        )
      )
      const jobs = yield* Jobs.Jobs
      const at = new Date("2031-02-03T04:05:06.789Z")
      const id = yield* jobs.enqueue(Doubler, { n: 21, at })
      const event = yield* probe.next(id)
      assert.strictEqual(event._tag, "completed")
      // args were decoded back into a Date before the handler ran
      assert.strictEqual(seen.length, 1)
      assert.instanceOf(seen[0]!.at, Date)
      assert.strictEqual(seen[0]!.at.getTime(), at.getTime())
      const done = yield* row(id)
      assert.strictEqual(done.state, "completed")
      assert.strictEqual(done.attempt, 1)
      assert.deepStrictEqual(done.errors, [])
      // the JSON form of the success Schema: bigint as a string, Date as an ISO string
      assert.deepStrictEqual(done.result, { doubled: 42, big: "12345678901234567890", at: "2031-02-03T04:05:07.789Z" })

      const plain = yield* jobs.enqueue(NoResult, { n: 1 })
      assert.strictEqual((yield* probe.next(plain))._tag, "completed")
      const plainRow = yield* row(plain)
      assert.strictEqual(plainRow.state, "completed")
      assert.isNull(plainRow.result)
    }))

  it.effect("a result the success Schema rejects -> dead, not retried", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      let runs = 0
      yield* startWorker(
        fastWorker("o-success"),
        Layer.mergeAll(Job.toLayer(BadResult, () => Effect.sync(() => (runs++, { count: 1.5 }))), probe.layer)
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(BadResult, {})
      assert.strictEqual((yield* probe.next(id))._tag, "dead")
      const r = yield* row(id)
      assert.strictEqual(r.state, "dead")
      assert.strictEqual(runs, 1)
      assert.strictEqual(r.errors.length, 1)
      assert.strictEqual(r.errors[0]!.kind, "InvalidResult")
      assert.include(r.errors[0]!.message, "success Schema")
    }))

  it.effect("typed failure -> retried after the Schedule's delay for each attempt (1 s, 2 s, 4 s), then dead", () => {
    const t0 = startOfNextSecond()
    return withTestClock(
      t0,
      Effect.gen(function*() {
        const probe = yield* makeProbe
        const ranAt: Array<{ attempt: number; now: number }> = []
        yield* startWorker(
          clockWorker("o-backoff"),
          Layer.mergeAll(
            Job.toLayer(Backoff, (_, ctx) =>
              Effect.gen(function*() {
                ranAt.push({ attempt: ctx.attempt, now: yield* Clock.currentTimeMillis })
                return yield* new Flaky({ message: `boom ${ctx.attempt}` })
              })),
            probe.layer
          )
        )
        const id = yield* (yield* Jobs.Jobs).enqueue(Backoff, {})

        // attempt 1 runs at once; the clock has not moved, so every time is exact
        const first = yield* probe.next(id)
        assert.deepInclude(first, { _tag: "retryScheduled", delayMillis: 1000, message: "boom 1" })
        let r = yield* row(id)
        assert.strictEqual(r.state, "scheduled")
        assert.strictEqual(r.attempt, 1)
        assert.strictEqual(r.run_at.getTime(), t0 + 1000)
        assert.deepStrictEqual(r.errors, [{ attempt: 1, at: new Date(t0).toISOString(), kind: "Flaky", message: "boom 1" }])

        // attempts 2 and 3: the delay from the schedule, counted from the failure
        for (const [attempt, delay] of [[2, 2000], [3, 4000]] as const) {
          const previousRunAt = r.run_at.getTime()
          const event = yield* advanceUntil(probe.poll(id))
          assert.deepInclude(event, { _tag: "retryScheduled", delayMillis: delay, message: `boom ${attempt}` })
          r = yield* row(id)
          assert.strictEqual(r.state, "scheduled")
          assert.strictEqual(r.attempt, attempt)
          assert.strictEqual(r.errors.length, attempt)
          const entry = r.errors[attempt - 1]!
          assert.deepInclude(entry, { attempt, kind: "Flaky", message: `boom ${attempt}` })
          assert.strictEqual(delayAfter(r, entry), delay)
          // it did not run before it was due
          assert.isAtLeast(ranAt[attempt - 1]!.now, previousRunAt)
        }

        // attempt 4 of 4: out of attempts
        const last = yield* advanceUntil(probe.poll(id))
        assert.strictEqual(last._tag, "dead")
        r = yield* row(id)
        assert.strictEqual(r.state, "dead")
        assert.strictEqual(r.attempt, 4)
        assert.deepStrictEqual(r.errors.map((e) => [e.attempt, e.kind]), [[1, "Flaky"], [2, "Flaky"], [3, "Flaky"], [4, "Flaky"]])
        assert.include(r.errors[3]!.message, "boom 4")
        assert.include(r.errors[3]!.message, "no attempts left")
        assert.deepStrictEqual(ranAt.map((x) => x.attempt), [1, 2, 3, 4])
        assert.isAtLeast(ranAt[3]!.now, t0 + 1000 + 2000 + 4000)
      })
    )
  })

  it.effect("only the last maxErrors errors are kept, oldest first", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* startWorker(
        fastWorker("o-keep-two"),
        Layer.mergeAll(Job.toLayer(KeepTwo, (_, ctx) => new Flaky({ message: `boom ${ctx.attempt}` })), probe.layer)
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(KeepTwo, {})
      for (const attempt of [1, 2, 3]) {
        const e = yield* probe.next(id)
        assert.deepInclude(e, { _tag: "retryScheduled", message: `boom ${attempt}` })
        const r = yield* row(id)
        // never more than two kept, the newest last
        assert.deepStrictEqual(r.errors.map((x) => x.attempt), attempt === 1 ? [1] : [attempt - 1, attempt])
      }
      assert.strictEqual((yield* probe.next(id))._tag, "dead")
      const r = yield* row(id)
      assert.strictEqual(r.state, "dead")
      assert.strictEqual(r.attempt, 4)
      assert.deepStrictEqual(r.errors.map((x) => x.attempt), [3, 4])
      assert.strictEqual(r.errors[0]!.message, "boom 3")
      assert.include(r.errors[1]!.message, "boom 4")
      assert.isTrue(r.errors.every((x) => x.kind === "Flaky" && hasIso(x.at)))
    }))

  it.effect("Job.retryAfter(d) overrides the schedule and spends an attempt", () => {
    const t0 = startOfNextSecond()
    return withTestClock(
      t0,
      Effect.gen(function*() {
        const probe = yield* makeProbe
        const attempts: Array<number> = []
        yield* startWorker(
          clockWorker("o-retry-after"),
          Layer.mergeAll(
            Job.toLayer(RetryLater, (_, ctx) =>
              Effect.suspend(() => {
                attempts.push(ctx.attempt)
                return ctx.attempt === 1 ? Job.retryAfter("30 seconds", "rate limited") : Effect.void
              })),
            probe.layer
          )
        )
        const id = yield* (yield* Jobs.Jobs).enqueue(RetryLater, {})
        const first = yield* probe.next(id)
        assert.deepInclude(first, { _tag: "retryScheduled", delayMillis: 30_000, message: "rate limited" })
        const r = yield* row(id)
        assert.strictEqual(r.state, "scheduled")
        assert.strictEqual(r.attempt, 1) // counted
        assert.strictEqual(r.run_at.getTime(), t0 + 30_000) // not the schedule's 1 s
        assert.deepStrictEqual(r.errors, [{
          attempt: 1,
          at: new Date(t0).toISOString(),
          kind: "RetryAfter",
          message: "rate limited"
        }])

        assert.strictEqual((yield* advanceUntil(probe.poll(id), { step: "500 millis" }))._tag, "completed")
        const done = yield* row(id)
        assert.strictEqual(done.state, "completed")
        assert.strictEqual(done.attempt, 2)
        assert.deepStrictEqual(attempts, [1, 2])
      })
    )
  })

  it.effect("Job.retryAfter(d) on the last attempt -> dead", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* startWorker(
        fastWorker("o-retry-after-last"),
        Layer.mergeAll(Job.toLayer(RetryLast, () => Job.retryAfter("1 second", "try later")), probe.layer)
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(RetryLast, {})
      assert.strictEqual((yield* probe.next(id))._tag, "dead")
      const r = yield* row(id)
      assert.strictEqual(r.state, "dead")
      assert.strictEqual(r.attempt, 1)
      assert.strictEqual(r.errors.length, 1)
      assert.strictEqual(r.errors[0]!.kind, "RetryAfter")
      assert.include(r.errors[0]!.message, "try later")
      assert.include(r.errors[0]!.message, "no attempts left")
    }))

  it.effect("Job.snooze(d) runs the job again after d without spending an attempt", () => {
    const t0 = startOfNextSecond()
    return withTestClock(
      t0,
      Effect.gen(function*() {
        const probe = yield* makeProbe
        const runs: Array<{ attempt: number; now: number }> = []
        yield* startWorker(
          clockWorker("o-snooze"),
          Layer.mergeAll(
            Job.toLayer(Sleepy, (_, ctx) =>
              Effect.gen(function*() {
                runs.push({ attempt: ctx.attempt, now: yield* Clock.currentTimeMillis })
                if (runs.length <= 2) return yield* Job.snooze("10 seconds")
              })),
            probe.layer
          )
        )
        // maxAttempts is 1: if a snooze spent the attempt, the job could not run three times
        const id = yield* (yield* Jobs.Jobs).enqueue(Sleepy, {})
        assert.deepInclude(yield* probe.next(id), { _tag: "rescheduled", delayMillis: 10_000 })
        const r = yield* row(id)
        assert.strictEqual(r.state, "scheduled")
        assert.strictEqual(r.attempt, 0) // given back
        assert.strictEqual(r.run_at.getTime(), t0 + 10_000)
        assert.deepStrictEqual(r.errors, [])

        assert.deepInclude(yield* advanceUntil(probe.poll(id), { step: "200 millis" }), { _tag: "rescheduled" })
        const again = yield* row(id)
        assert.strictEqual(again.attempt, 0)
        assert.strictEqual(again.state, "scheduled")

        assert.strictEqual((yield* advanceUntil(probe.poll(id), { step: "200 millis" }))._tag, "completed")
        const done = yield* row(id)
        assert.strictEqual(done.state, "completed")
        assert.strictEqual(done.attempt, 1)
        assert.deepStrictEqual(done.errors, [])
        assert.deepStrictEqual(runs.map((x) => x.attempt), [1, 1, 1])
        assert.isAtLeast(runs[1]!.now, t0 + 10_000)
        assert.isAtLeast(runs[2]!.now, runs[1]!.now + 10_000)
      })
    )
  })

  it.effect("Job.discard(reason) -> dead at once, whatever attempts remain", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      let runs = 0
      yield* startWorker(
        fastWorker("o-discard"),
        Layer.mergeAll(Job.toLayer(Discarded, () => Effect.andThen(Effect.sync(() => runs++), Job.discard("bad payload"))), probe.layer)
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(Discarded, {})
      assert.deepInclude(yield* probe.next(id), { _tag: "dead", message: "bad payload" })
      const r = yield* row(id)
      assert.strictEqual(r.state, "dead")
      assert.strictEqual(r.attempt, 1)
      assert.strictEqual(runs, 1)
      assert.deepStrictEqual(r.errors.map((e) => [e.attempt, e.kind, e.message]), [[1, "Discarded", "bad payload"]])
    }))

  it.effect("Job.cancel(reason) -> cancelled", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      let runs = 0
      yield* startWorker(
        fastWorker("o-cancel"),
        Layer.mergeAll(Job.toLayer(Cancelled, () => Effect.andThen(Effect.sync(() => runs++), Job.cancel("not needed"))), probe.layer)
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(Cancelled, {})
      assert.deepInclude(yield* probe.next(id), { _tag: "cancelled", message: "not needed" })
      const r = yield* row(id)
      assert.strictEqual(r.state, "cancelled")
      assert.strictEqual(r.attempt, 1)
      assert.strictEqual(runs, 1)
      assert.deepStrictEqual(r.errors.map((e) => [e.attempt, e.kind, e.message]), [[1, "Cancelled", "not needed"]])
    }))

  it.effect("a defect (Effect.die, or a throw inside Effect.sync) -> dead with the cause, not retried", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* startWorker(
        fastWorker("o-defect", 2),
        Layer.mergeAll(
          Job.toLayer(Dies, () => Effect.die(new Error("kaboom from die"))),
          Job.toLayer(Throws, () =>
            Effect.sync(() => {
              throw new TypeError("thrown inside sync")
            })),
          probe.layer
        )
      )
      const jobs = yield* Jobs.Jobs
      const died = yield* jobs.enqueue(Dies, {})
      const threw = yield* jobs.enqueue(Throws, {})
      for (const [id, text] of [[died, "kaboom from die"], [threw, "thrown inside sync"]] as const) {
        const e = yield* probe.next(id)
        assert.strictEqual(e._tag, "dead")
        const r = yield* row(id)
        assert.strictEqual(r.state, "dead")
        assert.strictEqual(r.attempt, 1)
        assert.strictEqual(r.errors.length, 1)
        assert.strictEqual(r.errors[0]!.kind, "Defect")
        assert.include(r.errors[0]!.message, text)
      }
    }))

  it.effect("attempt timeout -> JobTimeout failure, retried, then dead when out of attempts", () => {
    const t0 = startOfNextSecond()
    return withTestClock(
      t0,
      Effect.gen(function*() {
        const probe = yield* makeProbe
        const started = [yield* Deferred.make<void>(), yield* Deferred.make<void>()]
        const interrupted: Array<number> = []
        yield* startWorker(
          clockWorker("o-timeout"),
          Layer.mergeAll(
            Job.toLayer(Slow, (_, ctx) =>
              Deferred.succeed(started[ctx.attempt - 1]!, undefined).pipe(
                Effect.andThen(Effect.never),
                Effect.onInterrupt(() => Effect.sync(() => interrupted.push(ctx.attempt)))
              )),
            probe.layer
          )
        )
        const id = yield* (yield* Jobs.Jobs).enqueue(Slow, {})
        yield* Deferred.await(started[0]!)
        const first = yield* advanceUntil(probe.poll(id))
        assert.deepInclude(first, { _tag: "retryScheduled", delayMillis: 1000 })
        let r = yield* row(id)
        assert.strictEqual(r.state, "scheduled")
        assert.strictEqual(r.attempt, 1)
        assert.strictEqual(r.errors.length, 1)
        assert.strictEqual(r.errors[0]!.kind, "JobTimeout")
        assert.include(r.errors[0]!.message, "1000") // the timeout that was exceeded
        assert.isAtLeast(Date.parse(r.errors[0]!.at), t0 + 1000) // not before the timeout
        assert.strictEqual(delayAfter(r, r.errors[0]), 1000)
        assert.deepStrictEqual(interrupted, [1])

        const last = yield* advanceUntil(probe.poll(id))
        assert.strictEqual(last._tag, "dead")
        assert.isTrue(yield* Deferred.isDone(started[1]!))
        r = yield* row(id)
        assert.strictEqual(r.state, "dead")
        assert.strictEqual(r.attempt, 2)
        assert.deepStrictEqual(r.errors.map((e) => [e.attempt, e.kind]), [[1, "JobTimeout"], [2, "JobTimeout"]])
        assert.include(r.errors[1]!.message, "no attempts left")
        assert.deepStrictEqual(interrupted, [1, 2])
      })
    )
  })

  it.effect("the handler sees id, name, queue, attempt, maxAttempts, priority, enqueuedAt, requestId and metadata", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const seen = yield* Deferred.make<{ ctx: Job.JobContext; current: Job.JobContext; requestId: string | undefined }>()
      yield* startWorker(
        fastWorker("o-ctx-override"),
        Layer.mergeAll(
          Job.toLayer(Context_, (_, ctx) =>
            Effect.gen(function*() {
              const current = yield* Job.CurrentJob
              const requestId = yield* RequestId.RequestId
              yield* Deferred.succeed(seen, { ctx, current, requestId })
            })),
          probe.layer
        )
      )
      const metadata = { tenant: "acme", origin: { service: "api", tags: ["a", "b"] } }
      const id = yield* (yield* Jobs.Jobs).enqueue(Context_, { n: 1 }, {
        queue: "o-ctx-override",
        maxAttempts: 7,
        priority: 3,
        metadata
      }).pipe(Effect.provideService(RequestId.RequestId, "req-ctx-1"))
      const { ctx, current, requestId } = yield* Deferred.await(seen)
      assert.strictEqual((yield* probe.next(id))._tag, "completed")
      const r = yield* row(id)
      assert.strictEqual(ctx.id, id)
      assert.strictEqual(ctx.name, "outcomes-context")
      assert.strictEqual(ctx.queue, "o-ctx-override")
      assert.strictEqual(ctx.attempt, 1)
      assert.strictEqual(ctx.maxAttempts, 7)
      assert.strictEqual(ctx.priority, 3)
      assert.instanceOf(ctx.enqueuedAt, Date)
      assert.strictEqual(ctx.enqueuedAt.getTime(), r.created_at.getTime())
      assert.strictEqual(ctx.requestId, "req-ctx-1")
      assert.deepStrictEqual(ctx.metadata, metadata)
      assert.deepStrictEqual(current, ctx)
      assert.strictEqual(requestId, "req-ctx-1")
    }))

  it.effect("a job name without a handler on the worker is not claimed: it stays available, attempt 0", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const sql = yield* SqlClient.SqlClient
      const [inserted] = yield* sql<{ readonly id: string }>`
        INSERT INTO effect_jobs.jobs (name, queue, args) VALUES ('outcomes-nobody-handles-this', 'o-unknown', '{}')
        RETURNING id::text`
      const id = inserted!.id
      // A job the worker can run, behind the other one (lower priority): once it has run, the
      // worker's claims have passed over the job without a handler.
      const marker = yield* (yield* Jobs.Jobs).enqueue(Strict, { n: 1 }, { queue: "o-unknown", priority: 5 })
      yield* startWorker(fastWorker("o-unknown"), Layer.mergeAll(Job.toLayer(Strict, () => Effect.void), probe.layer))
      assert.strictEqual((yield* probe.next(marker))._tag, "completed")
      const r = yield* row(id)
      assert.strictEqual(r.state, "available")
      assert.strictEqual(r.attempt, 0)
      assert.deepStrictEqual(r.errors, [])
      assert.isTrue(Option.isNone(yield* probe.poll(id)))
      assert.deepStrictEqual(probe.workerErrors, [])
    }))

  it.effect("args that do not decode (row written by hand) -> dead with the decode message; the worker keeps going", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const sql = yield* SqlClient.SqlClient
      const handled: Array<number> = []
      yield* startWorker(
        fastWorker("o-bad-args"),
        Layer.mergeAll(Job.toLayer(Strict, (args) => Effect.sync(() => handled.push(args.n))), probe.layer)
      )
      const bad = yield* sql<{ readonly id: string }>`
        INSERT INTO effect_jobs.jobs (name, queue, args)
        VALUES ('outcomes-strict-args', 'o-bad-args', '{"n": "seven"}'), ('outcomes-strict-args', 'o-bad-args', '[1, 2]')
        RETURNING id::text`
      assert.strictEqual(bad.length, 2)
      for (const { id } of bad) {
        assert.strictEqual((yield* probe.next(id))._tag, "dead")
        const r = yield* row(id)
        assert.strictEqual(r.state, "dead")
        assert.strictEqual(r.attempt, 1) // not retried although 5 attempts were allowed
        assert.strictEqual(r.errors.length, 1)
        assert.strictEqual(r.errors[0]!.kind, "InvalidArgs")
        assert.include(r.errors[0]!.message, "arguments do not decode")
      }
      // the Schema's own message, with the path of the offending field
      assert.include((yield* row(bad[0]!.id)).errors[0]!.message, `["n"]`)

      const good = yield* (yield* Jobs.Jobs).enqueue(Strict, { n: 7 })
      assert.strictEqual((yield* probe.next(good))._tag, "completed")
      assert.strictEqual((yield* row(good)).state, "completed")
      assert.deepStrictEqual(handled, [7])
      assert.deepStrictEqual(probe.workerErrors, [])
    }))
})
