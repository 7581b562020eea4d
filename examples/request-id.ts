/**
 * Request ids: a job enqueued where `RequestId` is set stores that id; its handler
 * runs with `RequestId` set again, `ctx.requestId` holding it, and a `requestId`
 * annotation on every log line. One id follows the work from the request into the
 * background. A job enqueued with no request id gets a fresh one.
 */
import { Console, Effect, Layer, Logger, Schema } from "effect"
import { Job, Jobs, RequestId, Worker } from "effect-jobs"
import { check, inspectJob, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const SendInvoice = Job.make("send-invoice", { args: Schema.Struct({ orderId: Schema.String }), queue: "invoices" })

const SendInvoiceLive = Job.toLayer(SendInvoice, (args, ctx) =>
  Effect.gen(function*() {
    const requestId = yield* RequestId.RequestId // the same as ctx.requestId, for code deep inside the handler
    yield* Console.log(`  handler of order ${args.orderId}: ctx.requestId=${ctx.requestId}, RequestId=${requestId}`)
    yield* Effect.logInfo("invoice sent") // annotated with jobId, job, queue, attempt and requestId
  }))

// What a web request handler would do: the id comes from a header, or your HTTP framework.
const checkout = (orderId: string) =>
  Effect.gen(function*() {
    const jobs = yield* Jobs.Jobs
    return yield* jobs.enqueue(SendInvoice, { orderId })
  })

const program = Effect.gen(function*() {
  const events = yield* EventLog.make
  yield* Layer.build(Worker.layer({ queues: { invoices: {} } }).pipe(Layer.provide([SendInvoiceLive, events.layer])))

  const withId = yield* checkout("A-1").pipe(Effect.provideService(RequestId.RequestId, "req-7f3a"))
  const withoutId = yield* checkout("A-2")
  yield* events.waitFor(withId, "completed")
  yield* events.waitFor(withoutId, "completed")

  const a = yield* inspectJob(withId)
  const b = yield* inspectJob(withoutId)
  yield* Console.log(`stored request ids: job ${withId}: ${a?.request_id}; job ${withoutId}: ${b?.request_id} (generated)`)
  yield* check(a?.request_id === "req-7f3a" && typeof b?.request_id === "string", "request ids stored")
})

// One log line per entry, `key=value` annotations included.
const LogFmt = Logger.layer([Logger.consoleLogFmt])

runMain(program.pipe(Effect.scoped, Effect.provide([Jobs.layer, LogFmt])))
