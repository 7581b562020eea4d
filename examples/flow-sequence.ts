/**
 * FIFO sequences per group (docs/flow-control.md): `flow: { sequence: true }`.
 *
 * Ledger entries of one account must be applied one at a time, in the order they were
 * enqueued, on whichever worker; entries of different accounts may run side by side.
 * Each job carries its account as its `group`. Entry 2 of account A fails once: it holds
 * its account while it waits for its retry, so entry 3 of A runs only after entry 2 has
 * succeeded. A job that ends dead would hold its account until an operator retries or
 * deletes it (`sequence: { onDead: "continue" }` goes on instead).
 */
import { Console, Effect, Layer, Schedule, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const Apply = Job.make("apply-ledger-entry", {
  args: Schema.Struct({ account: Schema.String, entry: Schema.Number }),
  queue: "ledger",
  retry: Schedule.spaced("200 millis")
})

const applied = new Map<string, Array<string>>()
let failedOnce = false
const Handlers = Job.toLayer(Apply, ({ account, entry }) =>
  Effect.gen(function*() {
    const log = applied.get(account) ?? []
    applied.set(account, log)
    yield* Effect.sleep("10 millis") // the write
    if (account === "A" && entry === 2 && !failedOnce) {
      failedOnce = true
      log.push(`${entry} (failed)`)
      return yield* Effect.fail("ledger busy")
    }
    log.push(String(entry))
  }))

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  const events = yield* EventLog.make
  // interleaved: A1, B1, A2, B2, ...
  const entries = [1, 2, 3, 4].flatMap((entry) =>
    ["A", "B"].map((account) => Jobs.entry(Apply, { account, entry }, { group: account }))
  )
  const ids = yield* jobs.enqueueAll(entries)
  yield* Layer.build(
    Worker.layer({ queues: { ledger: { concurrency: 4, flow: { sequence: true } } }, maintenanceInterval: "100 millis" })
      .pipe(Layer.provide([Handlers, events.layer]))
  )
  for (const id of ids) yield* events.waitFor(id, "completed")
  const a = applied.get("A")!.join(", ")
  const b = applied.get("B")!.join(", ")
  yield* Console.log(`account A: ${a}; account B: ${b}`)
  yield* check(a === "1, 2 (failed), 2, 3, 4" && b === "1, 2, 3, 4", "each account in order, one at a time")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
