/**
 * `npm run demo`: effect-jobs end to end.
 *
 * Starts an embedded Postgres (or uses DATABASE_URL), applies the migrations,
 * runs a worker, and enqueues jobs that succeed, fail and retry, snooze, and end
 * in the dead-letter state. Prints each event as it happens, then a summary of
 * the jobs it enqueued (only those: it can run again and again on one database).
 * A failure (a database that cannot be reached...) is printed once, and the
 * process exits 1.
 *
 * It ends by printing how to open the dashboard on that database; with
 * `--dashboard` (or `--dashboard=PORT`, default 4000, 0 for any free port) it
 * serves the dashboard itself on 127.0.0.1 until Ctrl-C, keeping the embedded
 * Postgres up meanwhile: `npm run demo -- --dashboard`.
 */
import { Cause, Context, Deferred, Effect, Exit, Layer, Schedule, Schema } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { createServer } from "node:http"
import { Database, Job, Jobs, JobsAdmin, Migrations, Observer, Worker } from "../src/index.ts"
import { startEmbeddedPostgres } from "../scripts/embedded-postgres.ts"

// -- jobs: a name, a Schema for the arguments, a policy --------------------------------------

const SendEmail = Job.make("send-email", {
  args: Schema.Struct({ to: Schema.String, subject: Schema.String }),
  success: Schema.Struct({ messageId: Schema.String })
})

const CallFlakyApi = Job.make("call-flaky-api", {
  args: Schema.Struct({ endpoint: Schema.String }),
  maxAttempts: 5,
  retry: Schedule.spaced("200 millis")
})

const RateLimited = Job.make("rate-limited", { args: Schema.Struct({ tenant: Schema.String }) })

const Poison = Job.make("poison", {
  args: Schema.Struct({ payload: Schema.String }),
  maxAttempts: 3,
  retry: Schedule.spaced("100 millis")
})

// -- handlers: Effects, provided as layers ---------------------------------------------------

class ApiDown extends Schema.TaggedError<ApiDown>()("ApiDown", { endpoint: Schema.String }) {}

const Handlers = Layer.mergeAll(
  Job.toLayer(SendEmail, (args, ctx) =>
    Effect.succeed({ messageId: `msg-${ctx.id}-${args.to.split("@")[0]}` })),
  // fails on its first two attempts, then succeeds
  Job.toLayer(CallFlakyApi, (args, ctx) =>
    ctx.attempt < 3 ? Effect.fail(new ApiDown({ endpoint: args.endpoint })) : Effect.void),
  // snoozes once (no attempt spent), then succeeds
  Job.toLayer(RateLimited, (_args, ctx) =>
    ctx.runs === 1 ? Job.snooze("300 millis") : Effect.void),
  // always fails: ends in the dead-letter state after 3 attempts
  Job.toLayer(Poison, (args) => Effect.fail(new Error(`cannot process ${args.payload}`)))
)

// -- the program -----------------------------------------------------------------------------

const TOTAL = 6 + 2 + 2 + 1 // jobs enqueued below
const pad = (s: string, n: number) => s.padEnd(n)

const program = Effect.gen(function*() {
  const finished = yield* Deferred.make<void>()
  let terminal = 0
  const done = Effect.suspend(() => (++terminal === TOTAL ? Deferred.succeed(finished, undefined) : Effect.void))
  const line = (event: string, job: Observer.JobInfo, detail = "") =>
    Effect.sync(() => console.log(`  ${pad(event, 16)} ${pad(`${job.name}#${job.id}`, 22)} attempt ${job.attempt}/${job.maxAttempts} ${detail}`))
  const progress: Observer.Events = {
    ...Observer.noop,
    started: (job) => line("started", job),
    completed: (job, ms) => Effect.andThen(line("completed", job, `in ${ms} ms`), done),
    retryScheduled: (job, delay, error) => line("retry scheduled", job, `in ${delay} ms: ${error}`),
    rescheduled: (job, delay, reason) => line("snoozed", job, `${reason}, back in ${delay} ms`),
    dead: (job, reason) => Effect.andThen(line("dead", job, reason), done)
  }

  const worker = Worker.layer({ queues: { default: { concurrency: 4, pollInterval: "100 millis" } }, maintenanceInterval: "50 millis" })
    .pipe(Layer.provide([Handlers, Observer.add(progress)])) // add: worker errors are still logged

  const ids = yield* Effect.gen(function*() {
    const jobs = yield* Jobs.Jobs
    console.log("enqueueing jobs...")
    const ids = [
      ...yield* jobs.enqueueMany(SendEmail, ["ada", "grace", "edsger", "barbara", "alan", "margaret"].map((name) => ({
        to: `${name}@example.com`,
        subject: "Welcome"
      }))),
      ...yield* jobs.enqueueMany(CallFlakyApi, [{ endpoint: "/charge" }, { endpoint: "/refund" }]),
      ...yield* jobs.enqueueMany(RateLimited, [{ tenant: "acme" }, { tenant: "globex" }]),
      yield* jobs.enqueue(Poison, { payload: "corrupt record" })
    ]
    yield* Deferred.await(finished).pipe(Effect.timeout("60 seconds"))
    return ids
  }).pipe(Effect.provide(worker))

  // The summary of this run's jobs only (the table may hold those of earlier runs).
  const admin = yield* JobsAdmin.JobsAdmin
  const rows = new Map<string, { name: string; state: string; jobs: number; attempts: number }>()
  for (const id of ids) {
    const job = yield* admin.get(id)
    const key = `${job.name}\u0000${job.state}`
    const row = rows.get(key) ?? { name: job.name, state: job.state, jobs: 0, attempts: 0 }
    rows.set(key, { ...row, jobs: row.jobs + 1, attempts: row.attempts + job.attempt })
  }
  const summary = Array.from(rows.values()).sort((a, b) => a.name.localeCompare(b.name) || a.state.localeCompare(b.state))
  console.log("\nsummary:")
  console.table(summary)
  const dead = summary.filter((r) => r.state === "dead").reduce((n, r) => n + r.jobs, 0)
  const completed = summary.filter((r) => r.state === "completed").reduce((n, r) => n + r.jobs, 0)
  if (completed !== TOTAL - 1 || dead !== 1) return yield* Effect.die(new Error("unexpected outcome"))
  console.log(`${completed} completed, ${dead} dead: done.`)
})

// -- the dashboard ---------------------------------------------------------------------------

/** `--dashboard` (port 4000) or `--dashboard=PORT`; undefined without it. */
const dashboardPort = (argv: ReadonlyArray<string>): number | undefined => {
  const flag = argv.find((a) => a === "--dashboard" || a.startsWith("--dashboard="))
  if (flag === undefined) return undefined
  const port = flag === "--dashboard" ? 4000 : Number(flag.slice("--dashboard=".length))
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--dashboard=PORT: a port of 0 to 65535, got ${flag}`)
  return port
}

/** How to open the dashboard on the demo's database once the demo has exited. */
const dashboardHint = (url: string | undefined) => {
  const cli = "node --conditions=@effect-jobs/source src/cli/bin.ts dashboard" // the CLI from the sources, no build
  if (url === undefined) {
    return "\nto look at these jobs in the dashboard, keep the embedded Postgres up and serve it:\n  npm run demo -- --dashboard"
  }
  // The URL's password is never printed: the command reads DATABASE_URL then.
  const withPassword = new URL(url).password !== ""
  return `\nto look at these jobs in the dashboard:\n  ${cli} --database-url ${withPassword ? `"$DATABASE_URL"` : `'${url}'`}\n` +
    `  (or: npm run demo -- --dashboard)`
}

/**
 * Serves the dashboard (effect-jobs/dashboard) on 127.0.0.1:`port` until SIGINT or SIGTERM.
 * @effect/platform-node (a dev dependency) is loaded only here.
 */
const serveDashboard = (port: number) =>
  Effect.gen(function*() {
    const { NodeHttpServer } = yield* Effect.promise(() => import("@effect/platform-node"))
    const { Dashboard } = yield* Effect.promise(() => import("../src/entry/dashboard.ts"))
    const server = HttpRouter.serve(Dashboard.layer({ hosts: ["127.0.0.1", "localhost"] }), {
      disableListenLog: true,
      disableLogger: true
    }).pipe(Layer.provideMerge(NodeHttpServer.layer(createServer, { port, host: "127.0.0.1" })))
    yield* Effect.scoped(Effect.gen(function*() {
      const address = Context.get(yield* Layer.build(server), HttpServer.HttpServer).address
      const where = address._tag === "UnixPathAddress" ? address.path : `http://127.0.0.1:${address.port}/`
      console.log(`\ndashboard on ${where} (Ctrl-C to stop)`)
      yield* Effect.callback<void>((resume) => {
        const stop = () => resume(Effect.void)
        process.once("SIGINT", stop)
        process.once("SIGTERM", stop)
        return Effect.sync(() => {
          process.off("SIGINT", stop)
          process.off("SIGTERM", stop)
        })
      })
    }))
    console.log("dashboard stopped")
  })

const main = async () => {
  const port = dashboardPort(process.argv.slice(2))
  const server = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres()
  if (server) console.log(`started an embedded Postgres on port ${server.port}`)
  const url = process.env.DATABASE_URL ?? server!.url
  try {
    return await Effect.runPromiseExit(
      Effect.andThen(Migrations.run, program).pipe(
        Effect.andThen(port === undefined ? Effect.sync(() => console.log(dashboardHint(process.env.DATABASE_URL))) : serveDashboard(port)),
        Effect.provide(Layer.mergeAll(Jobs.layer, JobsAdmin.layer).pipe(Layer.provideMerge(Database.layer(url))))
      )
    )
  } finally {
    await server?.stop()
  }
}

// (`NodeRuntime.runMain` from @effect/platform-node does this too; the demo loads it only for --dashboard.)
// Exit explicitly: `embedded-postgres` hooks `beforeExit` and calls `process.exit(0)`, which
// would hide a failure set through `process.exitCode`.
main().then(
  (exit) => {
    if (Exit.isFailure(exit)) console.error(Cause.pretty(exit.cause))
    process.exit(Exit.isFailure(exit) ? 1 : 0)
  },
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
