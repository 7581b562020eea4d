/**
 * Unique jobs: while a job with the same name and `uniqueKey` is unfinished
 * (scheduled, available or running), enqueueing again inserts nothing and returns
 * the existing job's id. Once it is finished (completed, dead or cancelled) the
 * key is free again.
 */
import { Console, Effect, Layer, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const SendWelcome = Job.make("send-welcome", { args: Schema.Struct({ userId: Schema.Number }), queue: "welcome" })
const SendWelcomeLive = Job.toLayer(SendWelcome, (args) => Console.log(`  welcome mail sent to user ${args.userId}`))

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  const welcome = (userId: number) => jobs.enqueue(SendWelcome, { userId }, { uniqueKey: `welcome:${userId}` })

  // No worker yet, so the first job is still waiting when the duplicates arrive.
  const first = yield* welcome(42)
  const again = yield* welcome(42)
  yield* Console.log(`enqueue twice with key welcome:42 -> ids ${first} and ${again}`)

  // Duplicates inside one batch collapse too.
  const batch = yield* jobs.enqueueMany(SendWelcome, [{ userId: 7 }, { userId: 7 }], { uniqueKey: "welcome:7" })
  yield* Console.log(`enqueueMany of two with key welcome:7 -> ids ${batch.join(" and ")}`)

  const events = yield* EventLog.make
  yield* Layer.build(Worker.layer({ queues: { welcome: {} } }).pipe(Layer.provide([SendWelcomeLive, events.layer])))
  yield* events.waitFor(first, "completed")

  // The first job is finished: the key is free, so this is a new job.
  const later = yield* welcome(42)
  yield* Console.log(`after job ${first} completed, key welcome:42 -> new id ${later}`)
  yield* events.waitFor(later, "completed")
  yield* check(first === again && batch[0] === batch[1] && later !== first, "duplicates share an id")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
