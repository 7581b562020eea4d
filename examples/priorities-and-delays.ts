/**
 * Priorities and delays. Among runnable jobs of a queue, lower `priority` runs
 * first (then earlier `run_at`, then enqueue order). `delay` or `runAt` keeps a
 * job in the `scheduled` state until it is due; the worker's maintenance fiber
 * then makes it `available` (checked every `maintenanceInterval`, default 1 s).
 */
import { Console, Effect, Layer, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, inspectJob, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const Notify = Job.make("notify", { args: Schema.Struct({ what: Schema.String }), queue: "notify" })

const ran: Array<string> = []
let enqueuedAt = 0
const NotifyLive = Job.toLayer(Notify, (args, ctx) =>
  Effect.sync(() => {
    ran.push(args.what)
    console.log(`  ran "${args.what}" (priority ${ctx.priority}) ${Date.now() - enqueuedAt} ms after enqueue`)
  }))

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  enqueuedAt = Date.now()
  yield* jobs.enqueue(Notify, { what: "weekly newsletter" }, { priority: 10 })
  yield* jobs.enqueue(Notify, { what: "order shipped" }) // the job's default priority: 0
  yield* jobs.enqueue(Notify, { what: "password reset" }, { priority: -5 })
  // Due well after the worker (started below) has run the three above, even on a slow machine.
  const later = yield* jobs.enqueue(Notify, { what: "trial ends soon" }, { delay: "2.5 seconds" })
  const at = yield* jobs.enqueue(Notify, { what: "meeting starts" }, { runAt: new Date(Date.now() + 1500) })
  yield* Console.log(`the delayed job ${later} is ${(yield* inspectJob(later))?.state}`)

  // One job at a time, so the order shows; checking for due jobs every 100 ms.
  const events = yield* EventLog.make
  yield* Layer.build(
    Worker.layer({ queues: { notify: { concurrency: 1 } }, maintenanceInterval: "100 millis" })
      .pipe(Layer.provide([NotifyLive, events.layer]))
  )
  yield* events.waitFor(later, "completed")
  yield* events.waitFor(at, "completed")
  yield* Console.log(`order: ${ran.join(", ")}`)
  yield* check(ran.join() === "password reset,order shipped,weekly newsletter,meeting starts,trial ends soon", "order")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
