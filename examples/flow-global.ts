/**
 * A fleet-wide limit per queue (docs/flow-control.md): `flow: { global: 2 }`.
 *
 * Two workers (in a real deployment, two processes or machines) each have 3 slots
 * for the "exports" queue, 6 in all. The queue may run only 2 exports at once, say
 * because the reporting database cannot take more: the gated claim counts the
 * queue's running jobs across every worker before it claims, so no more than 2 run
 * at once, whichever worker runs them. Give every worker of the queue the same `flow`.
 */
import { Console, Effect, Layer, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const Export = Job.make("export-report", { args: Schema.Struct({ report: Schema.Number }), queue: "exports" })

let running = 0
let most = 0
const Handlers = Job.toLayer(Export, ({ report }) =>
  Effect.gen(function*() {
    running++
    most = Math.max(most, running)
    console.log(`  export ${report} starts (${running} running)`)
    yield* Effect.sleep("50 millis") // the export
    running--
  }))

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  const events = yield* EventLog.make
  const ids = yield* jobs.enqueueMany(Export, Array.from({ length: 8 }, (_, i) => ({ report: i + 1 })))
  // the same flow on both workers
  const exports = { exports: { concurrency: 3, flow: { global: 2 } } }
  for (const workerId of ["worker-a", "worker-b"]) {
    yield* Layer.build(Worker.layer({ queues: exports, workerId }).pipe(Layer.provide([Handlers, events.layer])))
  }
  for (const id of ids) yield* events.waitFor(id, "completed")
  yield* Console.log(`8 exports on 2 workers of 3 slots each: at most ${most} ran at once`)
  yield* check(most === 2, "the global limit held and was used")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
