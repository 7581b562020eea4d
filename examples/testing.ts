/**
 * Testing your jobs, three ways (docs/testing.md):
 *
 * 1. `Testing.layerInline`: no database. `enqueue` runs the handler at once, in
 *    the caller's fiber, one attempt; `Testing.Enqueued` shows what ran and how.
 * 2. `Testing.drain`: a real worker against Postgres, until nothing runnable is
 *    left in its queues; `withScheduled` runs the jobs scheduled for later now.
 * 3. On Effect's `TestClock` (`Testing.withTestClock`): `Testing.drain` with
 *    `advanceTestClock` moves the virtual clock to each retry and delayed job,
 *    so a 10-minute backoff and a 1-day delay take milliseconds of real time;
 *    `Testing.advanceUntil` moves it for a worker you run yourself.
 */
import { Clock, Console, Effect, Layer, Option, Schedule, Schema } from "effect"
import { Job, Jobs, Testing, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"

class CardDeclined extends Schema.TaggedError<CardDeclined>()("CardDeclined", { message: Schema.String }) {}

// Retried 10 minutes after the first failure, 20 after the second, 40 after the third...
const Charge = Job.make("charge-card", {
  args: Schema.Struct({ orderId: Schema.String }),
  queue: "billing",
  maxAttempts: 5,
  retry: Schedule.exponential("10 minutes")
})
const Remind = Job.make("trial-reminder", { args: Schema.Struct({ email: Schema.String }), queue: "billing" })

/** The code under test: a checkout enqueues a charge now and a reminder for tomorrow. */
const checkout = (orderId: string, email: string) =>
  Effect.gen(function*() {
    const jobs = yield* Jobs.Jobs
    const charge = yield* jobs.enqueue(Charge, { orderId })
    const reminder = yield* jobs.enqueue(Remind, { email }, { delay: "1 day" })
    return { charge, reminder }
  })

/** Each run: which job, which attempt, at what time (by Effect's Clock: virtual on a TestClock). */
interface Run {
  readonly job: string
  readonly attempt: number
  readonly at: number
}

/** The handlers: the card is declined on the first two attempts, then goes through. */
const handlers = (runs: Array<Run>) =>
  Layer.mergeAll(
    Job.toLayer(Charge, (args, ctx) =>
      Effect.gen(function*() {
        runs.push({ job: Charge.name, attempt: ctx.attempt, at: yield* Clock.currentTimeMillis })
        if (ctx.attempt <= 2) return yield* new CardDeclined({ message: `order ${args.orderId}: declined` })
      })),
    Job.toLayer(Remind, (_args, ctx) =>
      Effect.gen(function*() {
        runs.push({ job: Remind.name, attempt: ctx.attempt, at: yield* Clock.currentTimeMillis })
      }))
  )

const minutesAfter = (start: number) => (run: Run) => {
  const seconds = Math.round((run.at - start) / 1000)
  return `${run.job} attempt ${run.attempt} at +${Math.floor(seconds / 60)} min${seconds % 60 === 0 ? "" : ` ${seconds % 60} s`}`
}

// 1. Inline, no database. A failure is a defect of the enqueue by default (so a broken handler
//    fails your test: `Testing.layerInline`); `onFailure: "record"` records it instead, as here.
const inlineWithRecord = Effect.gen(function*() {
  const runs: Array<Run> = []
  const layer = Testing.layerInlineWith({ onFailure: "record" }).pipe(Layer.provide(handlers(runs)))
  return yield* Effect.gen(function*() {
    yield* checkout("A-1", "ada@example.com")
    const enqueued = yield* Testing.Enqueued
    const [charge] = yield* enqueued.of(Charge)
    const [reminder] = yield* enqueued.of(Remind)
    yield* Console.log(
      `1. inline: charge-card for ${charge?.args.orderId} -> ${charge?.outcome?._tag}` +
        (charge?.outcome?._tag === "retryScheduled" ? ` in ${charge.outcome.delayMillis / 60_000} min` : "") +
        `; trial-reminder (delay ${String(reminder?.options?.delay)}) ran at once -> ${reminder?.outcome?._tag}`
    )
    return { charge: charge?.outcome?._tag, reminder: reminder?.outcome?._tag, runs: runs.length }
  }).pipe(Effect.provide(layer))
})

// 2. A real worker against Postgres, on the real clock.
const drained = Effect.gen(function*() {
  const runs: Array<Run> = []
  yield* checkout("B-2", "grace@example.com")
  const first = yield* Testing.drain({ queues: ["billing"] }).pipe(Effect.provide(handlers(runs)))
  yield* Console.log(`2. drain: ${JSON.stringify(first)} (the retry and the reminder wait, scheduled)`)
  const second = yield* Testing.drain({ queues: ["billing"], withScheduled: true }).pipe(Effect.provide(handlers(runs)))
  yield* Console.log(`   drain withScheduled: ${JSON.stringify(second)} (run now, not when due)`)
  return { first, second }
})

// 3. The same on a TestClock: each run at the virtual time it is due, no real time waited.
const start = Date.parse("2030-01-01T09:00:00.000Z")
const onTestClock = Testing.withTestClock(
  start,
  Effect.gen(function*() {
    const runs: Array<Run> = []
    yield* checkout("C-3", "linus@example.com")
    const result = yield* Testing.drain({ queues: ["billing"], advanceTestClock: true }).pipe(Effect.provide(handlers(runs)))
    const movedHours = ((yield* Clock.currentTimeMillis) - start) / 3_600_000
    yield* Console.log(`3. drain advanceTestClock: ${JSON.stringify(result)}; ${runs.map(minutesAfter(start)).join(", ")}`)
    return { runs, movedHours }
  })
)

// 3b. A worker you run yourself on the TestClock, and `advanceUntil` to move the clock until the
//     reminder (due in 1 day) has completed. (Leases and heartbeats run in real time, so any step
//     is safe while a job runs.)
const ownWorker = Testing.withTestClock(
  start,
  Effect.gen(function*() {
    const runs: Array<Run> = []
    yield* Layer.build(Worker.layer({ queues: { billing: {} } }).pipe(Layer.provide(handlers(runs))))
    const jobs = yield* Jobs.Jobs
    const id = yield* jobs.enqueue(Remind, { email: "margaret@example.com" }, { delay: "10 minutes" })
    const status = yield* Testing.advanceUntil(
      Effect.map(jobs.status(Remind, id), (s) => (s.state === "completed" ? Option.some(s) : Option.none())),
      { step: "10 seconds" }
    )
    const [run] = runs
    yield* Console.log(`3b. own worker + advanceUntil: trial-reminder #${id} ${status.state}, ${run ? minutesAfter(start)(run) : "never ran"}`)
    return run
  })
)

const program = Effect.gen(function*() {
  const one = yield* inlineWithRecord
  yield* check(one.charge === "retryScheduled" && one.reminder === "completed" && one.runs === 2, "inline: one attempt each")

  const two = yield* drained
  yield* check(
    two.first.completed === 0 && two.first.retried === 1 && two.second.completed === 2 && two.second.retried === 1,
    "drain: retry and reminder left scheduled, then run with withScheduled"
  )

  const three = yield* onTestClock
  const times = three.runs.map((r) => [r.job, r.attempt, (r.at - start) / 60_000])
  yield* check(
    JSON.stringify(times) === JSON.stringify([["charge-card", 1, 0], ["charge-card", 2, 10], ["charge-card", 3, 30], ["trial-reminder", 1, 1440]]),
    "TestClock: runs at +0, +10, +30 min and +1 day"
  )
  const own = yield* ownWorker
  yield* check(own !== undefined && own.at >= start + 10 * 60_000, "own worker: the reminder ran once due")
  yield* Console.log(
    `TestClock: charge-card completed on attempt 3 at +30 min, trial-reminder at +1440 min; the virtual clock moved ${three.movedHours} h`
  )
})

runMain(program.pipe(Effect.provide(Jobs.layer)))
