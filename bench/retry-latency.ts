/**
 * How late a short retry runs: jobs fail once with a 200 ms retry Schedule, on a worker with
 * the default maintenance interval (1 s); from each job's row, the delay its second attempt
 * got (`attempted_at` of attempt 2 minus the `at` of attempt 1's error) and how late that was
 * after its run time (`attempted_at - run_at`).
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node bench/retry-latency.ts [--jobs 50] [--delay-ms 200]
 *
 * The jobs are enqueued one every 10 to 40 ms (so their retries fall at different times, as
 * retries of unrelated failures do). A database `bench_retry_<pid>` is created and dropped.
 */
import { Effect, Exit, Layer, ManagedRuntime, Schedule, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { parseArgs } from "node:util"
import { Database, Job, Jobs, Migrations, Worker } from "../src/index.ts"
import { withDatabase, withSql } from "./sql.ts"

const { values } = parseArgs({
  options: { jobs: { type: "string", default: "50" }, "delay-ms": { type: "string", default: "200" } }
})
const count = Number(values.jobs)
const delayMillis = Number(values["delay-ms"])
const baseUrl = process.env["DATABASE_URL"]
if (baseUrl === undefined) throw new Error("DATABASE_URL is required")
const dbName = `bench_retry_${process.pid}`
const url = withDatabase(baseUrl, dbName)

const Flaky = Job.make("flaky", {
  args: Schema.Struct({}),
  queue: "q",
  retry: Schedule.spaced(`${delayMillis} millis`),
  maxAttempts: 3
})
const handlers = Job.toLayer(Flaky, (_, ctx) => (ctx.attempt === 1 ? Effect.fail("first attempt fails") : Effect.void))

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!

const main = Effect.gen(function*() {
  const client = ManagedRuntime.make(Jobs.layer.pipe(Layer.provideMerge(Database.layer(url))))
  yield* Effect.promise(() => client.runPromise(Effect.asVoid(Migrations.run)))
  const scope = yield* Scope.make()
  yield* Layer.buildWithScope(
    Worker.layer({ queues: { q: { concurrency: 8 } }, pruner: false }).pipe(
      Layer.provide(handlers),
      Layer.provide(Database.layer(url, { applicationName: "bench-retry-worker" }))
    ),
    scope
  )
  const run = <A, E>(effect: Effect.Effect<A, E, Jobs.Jobs | SqlClient.SqlClient>) => Effect.promise(() => client.runPromise(effect))
  for (let n = 0; n < count; n++) {
    yield* run(Effect.flatMap(Jobs.Jobs, (jobs) => jobs.enqueue(Flaky, {})))
    yield* Effect.sleep(10 + Math.random() * 30)
  }
  while (true) {
    const [left] = yield* run(Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql<{ n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE state <> 'completed'`))
    if (left!.n === 0) break
    yield* Effect.sleep(50)
  }
  const rows = yield* run(Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ delay: number; late: number }>`
      SELECT (extract(epoch FROM attempted_at - (errors -> 0 ->> 'at')::timestamptz) * 1000)::float8 AS delay,
             (extract(epoch FROM attempted_at - run_at) * 1000)::float8 AS late
      FROM effect_jobs.jobs WHERE attempt = 2`))
  yield* Scope.close(scope, Exit.void)
  yield* Effect.promise(() => client.dispose())
  const delays = rows.map((r) => r.delay).sort((a, b) => a - b)
  const late = rows.map((r) => r.late).sort((a, b) => a - b)
  console.log(JSON.stringify({
    retries: rows.length,
    scheduleMillis: delayMillis,
    delayP50: +percentile(delays, 50).toFixed(1),
    delayMax: +delays[delays.length - 1]!.toFixed(1),
    lateMin: +late[0]!.toFixed(1),
    lateP50: +percentile(late, 50).toFixed(1),
    lateMax: +late[late.length - 1]!.toFixed(1)
  }))
})

await withSql(baseUrl, (sql) => sql.unsafe(`CREATE DATABASE ${dbName}`))
try {
  await Effect.runPromise(main)
} finally {
  await withSql(baseUrl, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`))
}
