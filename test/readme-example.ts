// The README's example, kept here so `npm run typecheck` checks it. Not run.
import { Cause, Effect, Exit, Layer, Schedule, Schema } from "effect"
import { Database, Job, Jobs, Migrations, Worker } from "../src/index.ts"

// A job: a name, a Schema for its arguments, optionally one for its result, and a policy.
const SendEmail = Job.make("send-email", {
  args: Schema.Struct({ to: Schema.String, subject: Schema.String }),
  success: Schema.Struct({ messageId: Schema.String }),
  queue: "emails",
  maxAttempts: 10,
  retry: Schedule.exponential("1 second").pipe(Schedule.jittered),
  timeout: "30 seconds"
})

// A handler is an Effect, provided as a layer.
const SendEmailLive = Job.toLayer(SendEmail, (args, ctx) =>
  Effect.gen(function*() {
    yield* Effect.log(`sending ${args.subject} to ${args.to} (attempt ${ctx.attempt})`)
    return { messageId: `msg-${ctx.id}` }
  }))

// A worker serves queues with a concurrency each; closing its layer is a graceful shutdown.
const WorkerLive = Worker.layer({ queues: { emails: { concurrency: 10 } } })

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  yield* jobs.enqueue(SendEmail, { to: "ada@example.com", subject: "Welcome" }, { uniqueKey: "welcome:42" })
})

// Fails at start, with DatabaseUnreachable (host, port, database), if the database does not answer.
const PgLive = Database.layer(process.env.DATABASE_URL!)
const MainLive = Layer.mergeAll(WorkerLive, Jobs.layer).pipe(
  Layer.provide(SendEmailLive),
  Layer.provide(Layer.effectDiscard(Migrations.run)),
  Layer.provideMerge(PgLive)
)

// Runs until stopped; a failure is printed and the process exits 1
// (`NodeRuntime.runMain` from @effect/platform-node does the same).
Effect.runPromiseExit(Effect.andThen(program, Effect.never).pipe(Effect.provide(MainLive))).then((exit) => {
  if (Exit.isFailure(exit)) {
    console.error(Cause.pretty(exit.cause))
    process.exitCode = 1
  }
})
