/**
 * Cancelling a running job: `JobsAdmin.cancel` records the request on the job's row
 * and NOTIFYs the workers; the worker running the job interrupts its handler (the
 * handler's finalizers run) and records the job `cancelled`, and `Jobs.await` fails
 * with `JobCancelled`. A job that has not started yet is cancelled at once.
 */
import { Console, Deferred, Effect, Layer, Schema } from "effect"
import { Job, Jobs, JobsAdmin, Worker } from "effect-jobs"
import { check, inspectJob, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const ExportTable = Job.make("export-table", { args: Schema.Struct({ table: Schema.String }), queue: "exports" })

const program = Effect.gen(function*() {
  const started = yield* Deferred.make<void>()
  const cleanedUp = yield* Deferred.make<void>()
  // The handler blocks forever (a stuck download, say); its finalizer removes its temp file.
  const ExportTableLive = Job.toLayer(ExportTable, ({ table }, ctx) =>
    Effect.andThen(
      Console.log(`  exporting ${table} (job ${ctx.id}) to /tmp/${table}.csv`),
      Effect.andThen(Deferred.succeed(started, undefined), Effect.never)
    ).pipe(Effect.ensuring(Effect.andThen(
      Console.log(`  finalizer: removed /tmp/${table}.csv`),
      Deferred.succeed(cleanedUp, undefined)
    ))))
  const events = yield* EventLog.make
  yield* Layer.build(Worker.layer({ queues: { exports: {} } }).pipe(Layer.provide([ExportTableLive, events.layer])))

  const jobs = yield* Jobs.Jobs
  const admin = yield* JobsAdmin.JobsAdmin
  const running = yield* jobs.enqueue(ExportTable, { table: "orders" })
  const waiting = yield* jobs.enqueue(ExportTable, { table: "customers" }, { delay: "1 hour" })
  yield* Deferred.await(started)

  const requested = yield* admin.cancel(running, { reason: "export no longer needed" })
  yield* Console.log(`cancel(${running}) while it runs -> ${requested}`)
  const awaited = yield* jobs.await(ExportTable, running, { timeout: "30 seconds" }).pipe(
    Effect.as("completed?"),
    Effect.catchTag("JobCancelled", (e) => Effect.succeed(`JobCancelled (${e.reason})`))
  )
  yield* Console.log(`await(${running}) -> ${awaited}`)
  const row = yield* inspectJob(running)
  yield* Console.log(`job ${running} is ${row?.state}, attempt ${row?.attempt}, last error ${row?.errors.at(-1)?.kind}`)

  const immediate = yield* admin.cancel(waiting, { reason: "export no longer needed" })
  yield* Console.log(`cancel(${waiting}) before it ran -> ${immediate}`)
  const finalized = yield* Deferred.isDone(cleanedUp)
  yield* check(requested === "cancelRequested" && awaited.startsWith("JobCancelled") && finalized, "cancelled while running")
  yield* check(immediate === "cancelled" && (yield* inspectJob(waiting))?.state === "cancelled", "cancelled while waiting")
})

runMain(program.pipe(Effect.scoped, Effect.provide([Jobs.layer, JobsAdmin.layer])))
