/**
 * A rate limit per queue (docs/flow-control.md, "Rate limits"): `flow: { rate }`.
 *
 * A partner API takes at most 5 calls a second from all of us together. Two workers
 * (in a real deployment, two processes) serve the "partner" queue with 4 slots each;
 * `rate: { limit: 5, interval: "1 second" }` lets at most 5 jobs of the queue start
 * per second across both, counted on the database's clock. A job over the limit
 * waits, still available, with no attempt spent, and starts when the window frees.
 */
import { Console, Effect, Layer, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const Call = Job.make("partner-call", { args: Schema.Struct({ call: Schema.Number }), queue: "partner" })

const starts: Array<number> = []
const Handlers = Job.toLayer(Call, ({ call }) =>
  Effect.sync(() => {
    starts.push(Date.now())
    console.log(`  call ${call} starts`)
  }))

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  const events = yield* EventLog.make
  const ids = yield* jobs.enqueueMany(Call, Array.from({ length: 12 }, (_, i) => ({ call: i + 1 })))
  // the same flow on both workers
  const partner = { partner: { concurrency: 4, flow: { rate: { limit: 5, interval: "1 second" as const } } } }
  for (const workerId of ["worker-a", "worker-b"]) {
    yield* Layer.build(Worker.layer({ queues: partner, workerId }).pipe(Layer.provide([Handlers, events.layer])))
  }
  for (const id of ids) yield* events.waitFor(id, "completed")
  // 12 calls at 5 a second: three windows, the last starting at least two seconds after the first
  const spread = Math.max(...starts) - Math.min(...starts)
  yield* Console.log(`12 calls at 5 per second on 2 workers: spread over ${spread >= 1500 ? "at least 1.5" : "less than 1.5"} s`)
  yield* check(spread >= 1500, "the rate limit held across both workers")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
