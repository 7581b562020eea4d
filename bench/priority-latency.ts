/**
 * Priority behind a buffer: how long a high-priority job waits to start while a worker is
 * busy on a backlog of low-priority no-op jobs (its adaptive prefetch buffers up to ~100 ms
 * of them, at most 1000).
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node bench/priority-latency.ts [--samples 100] [--backlog 300000]
 *
 * A database `bench_priority_<pid>` is created (and dropped at the end). `--backlog` jobs of
 * priority 10 (each a no-op, or a sleep of `--low-ms`) are enqueued first; then one worker (concurrency 24, adaptive prefetch) starts,
 * and once it has run for 500 ms, high-priority jobs (priority 0) are enqueued one at a
 * time from a second pool, 10 to 30 ms apart. The latency is from just before the enqueue
 * call to the start of that job's handler ("start"); the claim latency is the job's
 * `attempted_at - created_at` in the database ("claim"). Prints p50 / p99 of both, and the
 * backlog left at the end (it must not run out during the sampling, or the figures say
 * nothing). The enqueuer shares the worker's process: with no-op jobs the worker keeps the
 * CPU busy, and the enqueue's own time is part of "start".
 */
import { Context, Deferred, Effect, Exit, Layer, ManagedRuntime, Scope, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { Database, Job, Jobs, Migrations, Worker } from "../src/index.ts"
import { withDatabase, withSql } from "./sql.ts"

const { values } = parseArgs({
  options: { samples: { type: "string", default: "100" }, backlog: { type: "string", default: "300000" },
    "low-ms": { type: "string", default: "0" }
  }
})
const samples = Number(values.samples)
const backlog = Number(values.backlog)
const lowMillis = Number(values["low-ms"])
const baseUrl = process.env["DATABASE_URL"]
if (baseUrl === undefined) throw new Error("DATABASE_URL is required")
const dbName = `bench_priority_${process.pid}`
const url = withDatabase(baseUrl, dbName)

const Low = Job.make("low", { args: Schema.Struct({}), queue: "q", priority: 10, retention: 0 })
// (kept when completed: the claim latency is read from their rows at the end)
const High = Job.make("high", { args: Schema.Struct({ n: Schema.Number }), queue: "q", priority: 0 })

const started = new Map<number, Deferred.Deferred<number>>()
const handlers = Layer.merge(
  Job.toLayer(Low, () => lowMillis > 0 ? Effect.sleep(lowMillis) : Effect.void),
  Job.toLayer(High, ({ n }) => Effect.suspend(() => Deferred.succeed(started.get(n)!, performance.now())))
)

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!

const main = Effect.gen(function*() {
  const client = ManagedRuntime.make(Jobs.layer.pipe(Layer.provideMerge(Database.layer(url))))
  yield* Effect.promise(() => client.runPromise(Effect.asVoid(Migrations.run)))
  yield* Effect.promise(() =>
    client.runPromise(Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      for (let offset = 0; offset < backlog; offset += 20_000) {
        yield* jobs.enqueueMany(Low, Array.from({ length: Math.min(20_000, backlog - offset) }, () => ({})))
      }
    }))
  )
  const scope = yield* Scope.make()
  const context = yield* Layer.buildWithScope(
    Worker.layer({ queues: { q: { concurrency: 24 } }, pruner: false }).pipe(
      Layer.provide(handlers),
      Layer.provide(Database.layer(url, { applicationName: "bench-priority-worker" }))
    ),
    scope
  )
  const worker = Context.get(context, Worker.Worker)
  yield* Effect.sleep("500 millis")
  const latencies: Array<number> = []
  const prefetch: Array<number> = []
  for (let n = 0; n < samples; n++) {
    const d = yield* Deferred.make<number>()
    started.set(n, d)
    const status = yield* worker.status
    prefetch.push(status[0]?.prefetch ?? 0)
    const t0 = performance.now()
    yield* Effect.promise(() => client.runPromise(Effect.flatMap(Jobs.Jobs, (jobs) => jobs.enqueue(High, { n }))))
    latencies.push((yield* Deferred.await(d)) - t0)
    yield* Effect.sleep(10 + Math.random() * 20)
  }
  const left = yield* Effect.promise(() =>
    client.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql<{ n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE name = 'low'`))
  )
  // From the insert's commit-side clock (created_at = now() of the enqueue) to the claim (attempted_at).
  const claims = yield* Effect.promise(() =>
    client.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql<{ ms: number }>`SELECT (extract(epoch FROM attempted_at - created_at) * 1000)::float8 AS ms
                          FROM effect_jobs.jobs WHERE name = 'high' ORDER BY 1`))
  )
  const claimMs = claims.map((r) => r.ms)
  yield* Scope.close(scope, Exit.void)
  yield* Effect.promise(() => client.dispose())
  const sorted = latencies.slice().sort((a, b) => a - b)
    console.log(JSON.stringify({
    samples,
    lowMillis,
    startP50: +percentile(sorted, 50).toFixed(1),
    startP99: +percentile(sorted, 99).toFixed(1),
    startMax: +sorted[sorted.length - 1]!.toFixed(1),
    claimP50: +percentile(claimMs, 50).toFixed(1),
    claimP99: +percentile(claimMs, 99).toFixed(1),
    prefetch: `${Math.min(...prefetch)}..${Math.max(...prefetch)}`,
    backlogLeft: left[0]?.n
  }))
})

await withSql(baseUrl, (sql) => sql.unsafe(`CREATE DATABASE ${dbName}`))
try {
  await Effect.runPromise(main)
} finally {
  await withSql(baseUrl, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`))
}
