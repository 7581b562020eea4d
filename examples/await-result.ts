/**
 * Waiting for a job's result: `Jobs.await` returns it decoded with the job's `success`
 * Schema (a `Date` comes back a `Date`). A job that ended `dead` fails the wait with
 * `JobDead`, a cancelled one with `JobCancelled`; `timeout` bounds the wait.
 * The result is read from the job's row: keep `retention` above 0 (default: 1 day).
 */
import { Console, Effect, Layer, Option, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"

const QuoteShipping = Job.make("quote-shipping", {
  args: Schema.Struct({ country: Schema.String, kg: Schema.Number }),
  success: Schema.Struct({ cents: Schema.Number, deliveryBy: Schema.Date }),
  queue: "quotes"
})

const perKg: Record<string, number> = { FR: 450, DE: 520 }
const QuoteShippingLive = Job.toLayer(QuoteShipping, ({ country, kg }, ctx) => {
  const rate = perKg[country]
  if (rate === undefined) return Job.discard(`no carrier ships to ${country}`)
  return Effect.succeed({ cents: Math.round(rate * kg), deliveryBy: new Date(ctx.enqueuedAt.getTime() + 3 * 86_400_000) })
})

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  const [fr, aq] = yield* jobs.enqueueMany(QuoteShipping, [{ country: "FR", kg: 2.5 }, { country: "AQ", kg: 1 }])
  const later = yield* jobs.enqueue(QuoteShipping, { country: "DE", kg: 1 }, { delay: "1 hour" })

  // A typed result, its Date decoded from the stored JSON.
  const quote = yield* jobs.await(QuoteShipping, fr!, { timeout: "30 seconds" })
  yield* Console.log(`job ${fr}: ${quote.cents} cents, delivery by ${quote.deliveryBy.toISOString().slice(0, 10)}`)
  const status = yield* jobs.status(QuoteShipping, fr!)
  yield* Console.log(`status of job ${fr}: ${status.state}, result ${Option.getOrUndefined(status.result)?.cents} cents`)

  // A job that went to `dead`: the wait fails with JobDead, carrying the last error.
  const dead = yield* jobs.await(QuoteShipping, aq!, { timeout: "30 seconds" }).pipe(
    Effect.as("completed?"),
    Effect.catchTag("JobDead", (e) => Effect.succeed(`JobDead: ${e.message}`))
  )
  yield* Console.log(`job ${aq}: ${dead}`)

  // A job due in an hour is not finished within 200 ms.
  const timedOut = yield* jobs.await(QuoteShipping, later, { timeout: "200 millis" }).pipe(
    Effect.as("finished?"),
    Effect.catchTag("AwaitTimeout", (e) => Effect.succeed(`AwaitTimeout after ${e.timeoutMillis} ms, still waiting`))
  )
  yield* Console.log(`job ${later}: ${timedOut}`)
  yield* check(quote.cents === 1125 && quote.deliveryBy instanceof Date && dead.startsWith("JobDead"), "typed await")
})

const WorkerLive = Worker.layer({ queues: { quotes: { concurrency: 2 } } }).pipe(Layer.provide(QuoteShippingLive))
runMain(program.pipe(Effect.provide(WorkerLive), Effect.provide(Jobs.layer)))
