/**
 * Transactional enqueue: inside `sql.withTransaction`, `enqueue` joins the caller's
 * transaction. The job exists only if the transaction commits, and workers are
 * woken only then; a rollback takes the job with it.
 */
import { Console, Effect, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, inspectJob, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const SendReceipt = Job.make("send-receipt", { args: Schema.Struct({ orderId: Schema.String }), queue: "receipts" })
const SendReceiptLive = Job.toLayer(SendReceipt, (args) => Console.log(`  receipt sent for order ${args.orderId}`))

class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", { sku: Schema.String }) {}

const program = Effect.gen(function*() {
  const events = yield* EventLog.make
  yield* Layer.build(Worker.layer({ queues: { receipts: {} } }).pipe(Layer.provide([SendReceiptLive, events.layer])))
  const sql = yield* SqlClient.SqlClient
  const jobs = yield* Jobs.Jobs

  // 1. The order fails after the job was enqueued: the transaction rolls back, and the job with it.
  let rolledBack = ""
  yield* sql.withTransaction(Effect.gen(function*() {
    rolledBack = yield* jobs.enqueue(SendReceipt, { orderId: "A-1" })
    return yield* new OutOfStock({ sku: "blue-mug" })
  })).pipe(Effect.catchTag("OutOfStock", (e) => Console.log(`order A-1 failed (${e.sku} out of stock): rolled back`)))
  const gone = yield* inspectJob(rolledBack)
  yield* Console.log(`job ${rolledBack} after the rollback: ${gone === undefined ? "does not exist" : gone.state}`)

  // 2. The order succeeds: the job is committed with it, and runs.
  const committed = yield* sql.withTransaction(Effect.gen(function*() {
    // ... write the order with `sql` here: same transaction, same connection ...
    return yield* jobs.enqueue(SendReceipt, { orderId: "A-2" })
  }))
  yield* Console.log(`order A-2 committed with job ${committed}`)
  yield* events.waitFor(committed, "completed")
  const row = yield* inspectJob(committed)
  yield* check(gone === undefined && row?.state === "completed", "only the committed job ran")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
