/**
 * The whole loop: define a job, handle it, run a worker, enqueue, await the result.
 *
 *   node examples/basic.ts          (DATABASE_URL, or an embedded Postgres)
 */
import { Console, Effect, Layer, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"

// A job: a name, a Schema for its arguments, optionally one for its result, and a policy.
const SendEmail = Job.make("send-email", {
  args: Schema.Struct({ to: Schema.String, subject: Schema.String }),
  success: Schema.Struct({ messageId: Schema.String }),
  queue: "emails",
  maxAttempts: 5
})

// Its handler: an Effect that gets the decoded arguments and the run's context.
// Delivery is at least once, so a handler must be safe to run twice.
const SendEmailLive = Job.toLayer(SendEmail, (args, ctx) =>
  Effect.gen(function*() {
    yield* Console.log(`  sending "${args.subject}" to ${args.to} (job ${ctx.id}, attempt ${ctx.attempt} of ${ctx.maxAttempts})`)
    return { messageId: `msg-${ctx.id}` }
  }))

// A worker serving the "emails" queue, five jobs at a time, with the handlers it runs.
const WorkerLive = Worker.layer({ queues: { emails: { concurrency: 5 } } }).pipe(Layer.provide(SendEmailLive))

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  const id = yield* jobs.enqueue(SendEmail, { to: "ada@example.com", subject: "Welcome!" })
  yield* Console.log(`enqueued job ${id}`)

  // Waits until the job is finished; the result is decoded with the job's `success` Schema.
  const result = yield* jobs.await(SendEmail, id, { timeout: "30 seconds" })
  yield* Console.log(`job ${id} completed with messageId ${result.messageId}`)
  yield* check(result.messageId === `msg-${id}`, "the handler's result came back")
})

// The worker runs while `program` does, and shuts down gracefully when it ends.
runMain(program.pipe(Effect.provide(WorkerLive), Effect.provide(Jobs.layer)))
