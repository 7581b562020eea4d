/**
 * The outcomes a handler can choose besides success and failure:
 *   Job.snooze(d)      run again after d; the attempt is given back
 *   Job.discard(why)   straight to `dead`, whatever attempts remain
 *   Job.cancel(why)    ends as `cancelled`
 *   a defect (a throw, Effect.die) goes to `dead` too, with the cause recorded; it is not retried.
 */
import { Console, Effect, Layer, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, inspectJob, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const Args = Schema.Struct({ orderId: Schema.String })
const WaitForExport = Job.make("wait-for-export", { args: Args, queue: "outcomes" })
const ImportOrder = Job.make("import-order", { args: Args, queue: "outcomes" })
const ShipOrder = Job.make("ship-order", { args: Args, queue: "outcomes" })
const Invoice = Job.make("invoice", { args: Args, queue: "outcomes" })

let exportChecks = 0
const Handlers = Layer.mergeAll(
  // not ready the first two times: check again in 100 ms without spending an attempt
  Job.toLayer(WaitForExport, () => ++exportChecks < 3 ? Job.snooze("100 millis") : Effect.void),
  Job.toLayer(ImportOrder, (args) => Job.discard(`order ${args.orderId} references an unknown customer`)),
  Job.toLayer(ShipOrder, (args) => Job.cancel(`order ${args.orderId} was refunded`)),
  // a bug in the handler: the throw is a defect, not a typed failure
  Job.toLayer(Invoice, () => Effect.sync((): void => { throw new TypeError("cannot read 'total' of undefined") }))
)

const program = Effect.gen(function*() {
  const events = yield* EventLog.make
  yield* Layer.build(
    Worker.layer({ queues: { outcomes: { concurrency: 4 } }, maintenanceInterval: "50 millis" })
      .pipe(Layer.provide([Handlers, events.layer]))
  )
  const jobs = yield* Jobs.Jobs
  const [snoozed, discarded, cancelled, defect] = yield* jobs.enqueueAll([
    Jobs.entry(WaitForExport, { orderId: "1" }),
    Jobs.entry(ImportOrder, { orderId: "2" }),
    Jobs.entry(ShipOrder, { orderId: "3" }),
    Jobs.entry(Invoice, { orderId: "4" })
  ])
  yield* events.waitFor(snoozed!, "completed")
  yield* events.waitFor(discarded!, "dead")
  yield* events.waitFor(cancelled!, "cancelled")
  yield* events.waitFor(defect!, "dead")

  for (const id of [snoozed!, discarded!, cancelled!, defect!]) {
    const row = yield* inspectJob(id)
    const error = row?.errors.at(-1)
    yield* Console.log(`${row?.name}: ${row?.state}, attempt ${row?.attempt}${error ? `, last error ${error.kind}` : ""}`)
  }
  const row = yield* inspectJob(snoozed!)
  yield* check(row?.state === "completed" && row.attempt === 1, "snoozes did not spend attempts")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
