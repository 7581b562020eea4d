/**
 * A consumer of the packed effect-jobs, as a user writes one: only `from "effect-jobs"`,
 * compiled by this app's own tsc and run by plain Node (no loader). Runs one job end to
 * end against DATABASE_URL and exits 0 when the database shows it completed.
 */
import { Effect, Exit, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Database, Job, Jobs, Migrations, Worker } from "effect-jobs"
import type { Dashboard } from "effect-jobs/dashboard"

/** The dashboard's subpath type-checks too (its layer's type, from the installed .d.ts). */
export type DashboardLayer = typeof Dashboard.layer

const Greet = Job.make("consumer-check-greet", {
  args: Schema.Struct({ name: Schema.String }),
  success: Schema.Struct({ greeting: Schema.String }),
  queue: "consumer-check"
})

const GreetLive = Job.toLayer(Greet, (args) => Effect.succeed({ greeting: `hello, ${args.name}` }))

const WorkerLive = Worker.layer({ queues: { "consumer-check": { concurrency: 2 } } }).pipe(Layer.provide(GreetLive))

// Enqueue one job and wait for it while a worker (started with the layer) runs it.
const runOne = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  const id = yield* jobs.enqueue(Greet, { name: "consumer" })
  const result = yield* jobs.await(Greet, id, { timeout: "30 seconds" })
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ readonly state: string }>`SELECT state FROM effect_jobs.jobs WHERE id = ${id}::bigint`
  const state = rows[0]?.state
  if (result.greeting !== "hello, consumer" || state !== "completed") {
    return yield* Effect.die(new Error(`job ${id}: result ${JSON.stringify(result)}, state ${state}`))
  }
  return `job ${id} completed (${result.greeting})`
}).pipe(Effect.provide(Layer.merge(WorkerLive, Jobs.layer)))

// Migrate first, then run the job: the worker starts only once the tables exist.
const program = Effect.gen(function*() {
  // A fresh database: the SQL files must be found in the installed package.
  const applied = yield* Migrations.run
  if (applied.length === 0) return yield* Effect.die(new Error(`no migrations applied from ${Migrations.directory}`))
  const done = yield* runOne
  console.log(`consumer check: ${applied.length} migrations applied from ${Migrations.directory}; ${done}`)
})

// The subpath resolves at run time on plain Node, to the installed dist/.
const dashboard = await import("effect-jobs/dashboard")
if (typeof dashboard.Dashboard.layer !== "function") throw new Error("effect-jobs/dashboard has no Dashboard.layer")

const url = process.env["DATABASE_URL"]
if (url === undefined) throw new Error("DATABASE_URL is not set")

const exit = await Effect.runPromiseExit(
  program.pipe(
    Effect.provide(Database.layer(url)),
    Effect.timeout("60 seconds")
  )
)
if (Exit.isFailure(exit)) console.error("consumer check failed:", exit.cause)
process.exit(Exit.isSuccess(exit) ? 0 : 1)
