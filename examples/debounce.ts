/**
 * Debounce and throttle with a unique key (docs/flow-control.md).
 *
 * - Debounce: every edit of a document enqueues "reindex it in 1 second" with
 *   `unique: { replace: true }`. While the job waits, each edit replaces it: new
 *   args, run time pushed back. It runs once, after the edits stop, with the last one.
 * - Throttle with the latest args: `replace: "keepRunAt"` keeps the first run time.
 *   The job runs 1 second after the first event, with the last event's args, however
 *   many came in between.
 *
 * `jobs.insert` says what each enqueue did: "inserted", "replaced" or "duplicate".
 */
import { Console, Effect, Layer, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const Reindex = Job.make("reindex-doc", { args: Schema.Struct({ docId: Schema.Number, text: Schema.String }), queue: "search" })
const Digest = Job.make("send-digest", { args: Schema.Struct({ latest: Schema.String }), queue: "search" })

const indexed: Array<string> = []
const digests: Array<string> = []
const Handlers = Layer.mergeAll(
  Job.toLayer(Reindex, (args) =>
    Effect.sync(() => {
      indexed.push(args.text)
      console.log(`  indexed doc ${args.docId}: "${args.text}"`)
    })),
  Job.toLayer(Digest, (args) =>
    Effect.sync(() => {
      digests.push(args.latest)
      console.log(`  digest sent, latest event: ${args.latest}`)
    }))
)

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  const events = yield* EventLog.make
  // Due jobs are made runnable every 100 ms.
  yield* Layer.build(
    Worker.layer({ queues: { search: {} }, maintenanceInterval: "100 millis" }).pipe(Layer.provide([Handlers, events.layer]))
  )

  // Five quick edits of doc 1: one job, replaced four times.
  const edits = []
  for (let rev = 1; rev <= 5; rev++) {
    edits.push(
      yield* jobs.insert(Reindex, { docId: 1, text: `rev ${rev}` }, {
        uniqueKey: "reindex:1",
        delay: "1 second",
        unique: { replace: true }
      })
    )
  }
  const id = edits[0]!.id
  yield* events.waitFor(id, "completed")
  yield* Console.log(
    `5 edits of doc 1 -> ${edits.map((e) => e.outcome).join(", ")}: one run, with "${indexed.join(", ")}"`
  )

  // Three events for the digest: the first one's run time, the last one's args.
  const digest = []
  for (const event of ["signup", "upgrade", "invoice paid"]) {
    digest.push(
      yield* jobs.insert(Digest, { latest: event }, {
        uniqueKey: "digest",
        delay: "1 second",
        unique: { replace: "keepRunAt" }
      })
    )
  }
  yield* events.waitFor(digest[0]!.id, "completed")
  yield* Console.log(`3 events -> ${digest.map((e) => e.outcome).join(", ")}: one digest, with "${digests.join(", ")}"`)

  yield* check(
    edits.every((e) => e.id === id) && indexed.join() === "rev 5" && digests.join() === "invoice paid",
    "one run each, with the last args"
  )
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
