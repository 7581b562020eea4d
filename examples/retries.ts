/**
 * Failures and retries: a typed failure is retried after the delay the job's
 * `Schedule` gives for that attempt, until `maxAttempts`; then the job is `dead`.
 * A handler can also ask for a given delay with `Job.retryAfter` (it still spends
 * the attempt). Each error is kept with the job (the last `maxErrors`, default 5).
 */
import { Console, Effect, Layer, Schedule, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, inspectJob, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

class PaymentDeclined extends Schema.TaggedError<PaymentDeclined>()("PaymentDeclined", {
  message: Schema.String
}) {}

// Fails every time: retried after 100 ms, then 200 ms, then dead after the 3rd attempt.
const Charge = Job.make("charge-card", {
  args: Schema.Struct({ orderId: Schema.String }),
  queue: "retries",
  maxAttempts: 3,
  retry: Schedule.exponential("100 millis", 2)
})

// Rate limited on its first attempt: asks to be retried in 300 ms, whatever the schedule says.
const SyncCrm = Job.make("sync-crm", { args: Schema.Struct({ contact: Schema.String }), queue: "retries" })

const Handlers = Layer.mergeAll(
  Job.toLayer(Charge, (args) => Effect.fail(new PaymentDeclined({ message: `card declined for order ${args.orderId}` }))),
  Job.toLayer(SyncCrm, (_args, ctx) => ctx.attempt === 1 ? Job.retryAfter("300 millis", "429 Too Many Requests") : Effect.void)
)

const program = Effect.gen(function*() {
  const events = yield* EventLog.make
  yield* Layer.build(
    // Retries wait in the `scheduled` state; the maintenance fiber makes them runnable
    // when due, so it sets the precision of short delays (default: every second).
    Worker.layer({ queues: { retries: {} }, maintenanceInterval: "50 millis" })
      .pipe(Layer.provide([Handlers, events.layer]))
  )
  const jobs = yield* Jobs.Jobs
  const charge = yield* jobs.enqueue(Charge, { orderId: "A-1001" })
  const sync = yield* jobs.enqueue(SyncCrm, { contact: "grace@example.com" })

  yield* events.waitFor(charge, "dead")
  yield* events.waitFor(sync, "completed")

  const dead = yield* inspectJob(charge)
  yield* Console.log(`charge-card #${charge}: ${dead?.state} after ${dead?.attempt} attempts; errors kept:`)
  for (const e of dead?.errors ?? []) yield* Console.log(`  attempt ${e.attempt}: ${e.kind}: ${e.message}`)
  const synced = yield* inspectJob(sync)
  yield* Console.log(`sync-crm #${sync}: ${synced?.state} on attempt ${synced?.attempt}`)
  yield* check(dead?.state === "dead" && dead.attempt === 3 && synced?.state === "completed", "dead after 3, completed on 2")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
