/**
 * Graceful shutdown: closing the worker's scope stops claiming, gives running jobs
 * `gracePeriod` to finish, then interrupts the rest and returns them to the queue
 * with their attempt given back. When the scope is closed, every outcome is written.
 */
import { Console, Deferred, Effect, Exit, Layer, Schema, Scope } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, inspectJob, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const BuildReport = Job.make("build-report", { args: Schema.Struct({ report: Schema.String }), queue: "reports" })

// The daily report takes half a second. The yearly one, the first time, takes an hour.
const yearlyBusy = Deferred.makeUnsafe<void>()
const BuildReportLive = Job.toLayer(BuildReport, (args, ctx) =>
  Effect.gen(function*() {
    yield* Console.log(`  building the ${args.report} report (attempt ${ctx.attempt})`)
    // (Deferred.succeed is true only the first time: the yearly report's first run.)
    if (args.report === "yearly" && (yield* Deferred.succeed(yearlyBusy, undefined))) yield* Effect.sleep("1 hour")
    else yield* Effect.sleep("500 millis")
  }).pipe(Effect.onInterrupt(() => Console.log(`  the ${args.report} report was interrupted`))))

const program = Effect.gen(function*() {
  const events = yield* EventLog.make
  const WorkerLive = Worker.layer({ queues: { reports: { concurrency: 2 } }, gracePeriod: "1 second" })
    .pipe(Layer.provide([BuildReportLive, events.layer]))

  const scope = yield* Scope.make()
  yield* Layer.buildWithScope(WorkerLive, scope)
  const jobs = yield* Jobs.Jobs
  const [daily, yearly] = yield* jobs.enqueueMany(BuildReport, [{ report: "daily" }, { report: "yearly" }])
  yield* Deferred.await(yearlyBusy)

  yield* Console.log("shutting the worker down (grace period: 1 second)")
  yield* Scope.close(scope, Exit.void)
  const d = yield* inspectJob(daily!)
  const y = yield* inspectJob(yearly!)
  yield* Console.log(`after shutdown: daily is ${d?.state}; yearly is ${y?.state} with ${y?.attempt} attempts spent`)

  yield* Console.log("starting a new worker")
  yield* Layer.build(WorkerLive)
  yield* events.waitFor(yearly!, "completed")
  const again = yield* inspectJob(yearly!)
  yield* Console.log(`yearly is ${again?.state}, on attempt ${again?.attempt}`)
  yield* check(d?.state === "completed" && y?.state === "available" && y.attempt === 0 && again?.attempt === 1, "released")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
