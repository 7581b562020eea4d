/**
 * Retries as the job's Schedule says: each step of the schedule is given the failure of
 * the attempt that just ended, so `Schedule.while` on the input and schedules that choose by error
 * decide on it, and a schedule that is done ends the job `dead` even with attempts left.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer, Schedule, Schema } from "effect"
import { Job, Jobs, type Worker } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { makeProbe, row } from "./support/probes.ts"

class Upstream extends Schema.TaggedError<Upstream>()("Upstream", {
  status: Schema.Number,
  message: Schema.String
}) {}

const fastWorker = (queue: string): Worker.Options => ({
  queues: { [queue]: { pollInterval: "20 millis" } },
  maintenanceInterval: "20 millis"
})

/** Retried while the upstream answers 5xx; a 4xx will not get better. */
const CallUpstream = Job.make("retry-schedule-upstream", {
  args: Schema.Struct({}),
  queue: "rs-input",
  maxAttempts: 10,
  retry: Schedule.spaced("10 millis").pipe(
    Schedule.while(({ input }: Schedule.Metadata<number, Upstream>) => input.status >= 500)
  )
})

/** A schedule that is done after two retries, below maxAttempts. */
const TwoRetries = Job.make("retry-schedule-two", {
  args: Schema.Struct({}),
  queue: "rs-recurs",
  maxAttempts: 10,
  retry: Schedule.recurs(2).pipe(Schedule.addDelay(() => Effect.succeed("10 millis")))
})

layer(Jobs.layer.pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })("retry schedule", (it) => {
  it.effect("the schedule gets the failure as its input: whileInput stops retrying on an error that will not pass", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const statuses = [503, 502, 404]
      yield* startWorker(
        fastWorker("rs-input"),
        Layer.merge(
          Job.toLayer(CallUpstream, (_, ctx) =>
            Effect.fail(new Upstream({ status: statuses[ctx.attempt - 1]!, message: `HTTP ${statuses[ctx.attempt - 1]}` }))),
          probe.layer
        )
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(CallUpstream, {})
      assert.deepInclude(yield* probe.next(id), { _tag: "retryScheduled", message: "HTTP 503" })
      assert.deepInclude(yield* probe.next(id), { _tag: "retryScheduled", message: "HTTP 502" })
      const last = yield* probe.next(id)
      assert.strictEqual(last._tag, "dead")
      const r = yield* row(id)
      assert.strictEqual(r.state, "dead")
      assert.strictEqual(r.attempt, 3, "dead after the 404, 7 attempts unspent")
      assert.deepInclude(r.errors[2], { attempt: 3, kind: "Upstream" })
      assert.match(r.errors[2]!.message, /^HTTP 404 \(the job's retry schedule is done: no more retries\)$/)
    }))

  it.effect("a schedule that is done before maxAttempts ends the job dead", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* startWorker(
        fastWorker("rs-recurs"),
        Layer.merge(Job.toLayer(TwoRetries, (_, ctx) => Effect.fail(`failure ${ctx.attempt}`)), probe.layer)
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(TwoRetries, {})
      assert.strictEqual((yield* probe.next(id))._tag, "retryScheduled")
      assert.strictEqual((yield* probe.next(id))._tag, "retryScheduled")
      assert.strictEqual((yield* probe.next(id))._tag, "dead")
      const r = yield* row(id)
      assert.strictEqual(r.attempt, 3, "the first run and the schedule's two retries")
    }))
})
