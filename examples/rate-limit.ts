/**
 * A handler that rate-limits its own calls (docs/flow-control.md, "Rate limits").
 *
 * The `sync-contact` job calls a CRM whose API allows 5 calls per second. Effect's
 * `RateLimiter`, on the Postgres store of effect-jobs (`RateLimiterStore.layer`), counts the
 * calls of every worker process on the database against one budget: each run waits for its
 * turn with `RateLimiter.sleep` (consume in "delay" mode, then sleep the delay it was given)
 * before it calls. Twelve jobs run at once here; the first five call at once, the next five
 * one window later, the last two two windows later.
 *
 * A run that waits for a token holds its worker slot (and its lease) while it sleeps; for
 * long waits prefer `onExceeded: "fail"` and `Job.snooze(retryAfter)`, which frees the slot
 * and spends no attempt.
 */
import { Console, Duration, Effect, Layer, Schema } from "effect"
import { RateLimiter } from "effect/persistence"
import { Job, Jobs, RateLimiterStore, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const SyncContact = Job.make("sync-contact", { args: Schema.Struct({ contact: Schema.Number }), queue: "crm" })

// The limiter on the database of the jobs: a layer like any other.
const Limiter = RateLimiter.layer.pipe(Layer.provide(RateLimiterStore.layer))

/** For each call, how many windows it waited for its token (0: it called at once). */
const windowsWaited: Array<number> = []

const Handler = Job.toLayer(SyncContact, (args) =>
  Effect.gen(function*() {
    const limiter = yield* RateLimiter.RateLimiter
    const turn = yield* RateLimiter.sleep(limiter, { key: "crm-api", limit: 5, window: "1 second" })
    // `turn.delay` is how long this call slept: within one window of the window it got.
    windowsWaited.push(Math.ceil(Duration.toMillis(turn.delay) / 1000))
    // ... the call to the CRM goes here ...
    yield* Console.log(`  contact ${args.contact} synced`)
  })).pipe(Layer.provide(Limiter))

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  const events = yield* EventLog.make
  yield* Layer.build(
    Worker.layer({ queues: { crm: { concurrency: 12 } } }).pipe(Layer.provide([Handler, events.layer]))
  )
  const ids = yield* jobs.enqueueMany(SyncContact, Array.from({ length: 12 }, (_, i) => ({ contact: i + 1 })))
  yield* Effect.forEach(ids, (id) => events.waitFor(id, "completed"), { discard: true })

  const perWindow = [0, 1, 2].map((w) => windowsWaited.filter((n) => n === w).length)
  yield* Console.log(`12 calls, 5 per second: ${perWindow.join(", ")} in windows 1, 2, 3`)
  yield* check(perWindow.join() === "5,5,2", "no window got more than the limit")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
