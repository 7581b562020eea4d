/**
 * Response times of the dashboard's API on a table of 1,000,000 jobs (issue 15).
 *
 *   node bench/dashboard.ts [server url] [--rows 1000000] [--calls 20] [--out file.json]
 *
 * Without a server URL it starts the embedded Postgres (scripts/embedded-postgres.ts). Needs
 * `--conditions=@effect-jobs/source` (as `npm run bench` sets) or a built package.
 *
 * 1. A fresh database, migrated, filled with `--rows` jobs of test/support/bigTable.ts's mix
 *    (one INSERT ... SELECT generate_series; mostly completed, some dead, cancelled,
 *    scheduled, available and running, six queues, a unique key on one job in ten), then
 *    VACUUM ANALYZE (a table that large has been through autovacuum long since); an hour of
 *    per-minute throughput rows for its queues; one idle worker, so `/api/workers` lists one.
 * 2. `Dashboard.layer` on a random port of 127.0.0.1 with `JobsAdmin.layer`, as
 *    `effect-jobs dashboard` runs it (its own pool of 10).
 * 3. Each API call, one at a time: 2 calls to warm up, then `--calls` timed ones (fetch from
 *    this process: the time includes the HTTP round trip, the JSON and the SQL); median and
 *    p95. The first `/api/queues` is timed on its own before anything else: with nothing
 *    stored yet it counts the history at once (later ones read the stored count).
 * 4. For comparison, the statement the overview ran per request before (a `GROUP BY queue,
 *    state` over the whole table) and the recount that now replaces it once per interval,
 *    each run `--calls` times straight on the database.
 *
 * Prints a table (markdown) and writes the figures as JSON.
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Effect, Exit, Layer, Schema, Scope } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { Database, Job, JobsAdmin, Migrations, Worker } from "effect-jobs"
import { Dashboard } from "effect-jobs/dashboard"
import { writeFileSync } from "node:fs"
import { createServer } from "node:http"
import { performance } from "node:perf_hooks"
import { startEmbeddedPostgres } from "../scripts/embedded-postgres.ts"
import { fillJobs, rareName, rareQueue } from "../test/support/bigTable.ts"
import { withDatabase, withSql } from "./sql.ts"
import { median, percentile, round } from "./stats.ts"

const args = process.argv.slice(2)
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`)
  return i === -1 ? undefined : args[i + 1]
}
const external = args[0] !== undefined && !args[0].startsWith("--") ? args[0] : undefined
const rows = Number(flag("rows") ?? 1_000_000)
const calls = Number(flag("calls") ?? 20)

const embedded = external === undefined ? await startEmbeddedPostgres() : undefined
const server = external ?? embedded!.url
const database = `bench_dashboard_${process.pid}`
const log = (line: string) => console.error(`[dashboard bench] ${line}`)

interface Timing {
  readonly call: string
  readonly medianMs: number | null
  readonly p95Ms: number | null
  readonly note?: string
}

const timeIt = async (f: () => Promise<unknown>, n: number, warmup = 2): Promise<ReadonlyArray<number>> => {
  for (let i = 0; i < warmup; i++) await f()
  const out: Array<number> = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    await f()
    out.push(performance.now() - t0)
  }
  return out
}

const summary = (call: string, samples: ReadonlyArray<number>, note?: string): Timing => ({
  call,
  medianMs: round(median(samples) ?? NaN, 1),
  p95Ms: round(percentile(samples, 95) ?? NaN, 1),
  ...(note === undefined ? {} : { note })
})

await withSql(server, (sql) => sql.unsafe(`CREATE DATABASE "${database}"`))
const url = withDatabase(server, database)
const scope = Effect.runSync(Scope.make())
try {
  const [version] = await withSql(url, (sql) => sql<{ readonly v: string }>`SELECT current_setting('server_version') AS v`)
  log(`Postgres ${version!.v} (${embedded !== undefined ? "embedded" : "server URL"}), ${rows.toLocaleString("en")} jobs`)
  const fillStart = performance.now()
  await Effect.runPromise(Effect.provide(Migrations.run, Database.layer(url, { maxConnections: 1 })))
  await withSql(url, (sql) =>
    Effect.gen(function*() {
      yield* fillJobs(sql.withoutTransforms(), rows)
      yield* sql.unsafe("VACUUM ANALYZE effect_jobs.jobs")
      // An hour of throughput: each queue, four workers, every minute.
      yield* sql.unsafe(`
        INSERT INTO effect_jobs.throughput (minute, queue, worker, completed, retried, dead, cancelled)
        SELECT date_trunc('minute', now()) - m * interval '1 minute', q, 'w' || w, 300 + m, m % 7, m % 3, m % 2
        FROM generate_series(0, 59) AS m, unnest(ARRAY['emails', 'billing', 'reports', 'webhooks', 'default', '${rareQueue}']) AS q,
             generate_series(1, 4) AS w`)
    }))
  log(`filled in ${Math.round((performance.now() - fillStart) / 1000)} s`)

  // One idle worker (it registers, so the workers page lists it), and the dashboard.
  const Idle = Job.make("bench-idle", { args: Schema.Struct({}), queue: "bench-idle" })
  await Effect.runPromise(Layer.buildWithScope(
    Worker.layer({ queues: { "bench-idle": {} }, pruner: false }).pipe(
      Layer.provide(Job.toLayer(Idle, () => Effect.void)),
      Layer.provide(Database.layer(url, { applicationName: "bench-dashboard-worker" }))
    ),
    scope
  ))
  const context = await Effect.runPromise(Layer.buildWithScope(
    HttpRouter.serve(Dashboard.layer({}), { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" })),
      Layer.provide(JobsAdmin.layer),
      Layer.provide(Database.layer(url, { applicationName: "bench-dashboard" }))
    ),
    scope
  ))
  const address = Context.get(context, HttpServer.HttpServer).address
  if (address._tag === "UnixPathAddress") throw new Error("the dashboard is not on TCP")
  const base = `http://127.0.0.1:${address.port}/api`
  const get = async (path: string) => {
    const res = await fetch(`${base}${path}`)
    const body = await res.text()
    if (res.status !== 200) throw new Error(`${path}: ${res.status} ${body.slice(0, 200)}`)
    return JSON.parse(body) as any
  }

  const results: Array<Timing> = []
  const t0 = performance.now()
  await get("/queues")
  results.push(summary("GET /api/queues, the first (nothing stored yet: counts the history)", [performance.now() - t0]))

  const page1 = await get("/jobs")
  const oneId = page1.jobs[10].id as string
  const paths: ReadonlyArray<readonly [string, string]> = [
    ["/config", "no SQL: the HTTP round trip"],
    ["/queues", "overview: counts per queue and state"],
    ["/throughput", "the last hour, every queue"],
    ["/throughput?queue=emails&minutes=360", "6 hours of one queue"],
    ["/workers", ""],
    ["/jobs", "newest first"],
    [`/jobs?cursor=${page1.next}`, "page 2"],
    ["/jobs?order=oldest", ""],
    ["/jobs?state=completed", ""],
    ["/jobs?state=dead", ""],
    ["/jobs?state=dead,cancelled", ""],
    ["/jobs?state=available", ""],
    ["/jobs?state=available&order=oldest", ""],
    ["/jobs?state=scheduled", ""],
    ["/jobs?state=running", ""],
    ["/jobs?queue=emails", "a large queue"],
    [`/jobs?queue=${rareQueue}`, "a rare queue (0.1 %)"],
    ["/jobs?state=dead&queue=billing", ""],
    ["/jobs?name=charge", "a common name"],
    [`/jobs?name=${rareName}`, "a rare name (0.1 %)"],
    ["/jobs?name=no-such-job", "a name with no jobs"],
    ["/jobs?q=key-500000", "search: a unique key"],
    ["/jobs?q=123456", "search: a job id (as a key, then by id)"],
    [`/jobs/${oneId}`, "one job"]
  ]
  for (const [path, note] of paths) {
    results.push(summary(`GET /api${path}`, await timeIt(() => get(path), calls), note === "" ? undefined : note))
  }

  const direct = await withSql(url, (sql) =>
    Effect.promise(async () => ({
      groupBy: await timeIt(
        () => Effect.runPromise(sql`SELECT queue, state, count(*)::int AS count FROM effect_jobs.jobs GROUP BY queue, state`),
        calls,
        1
      ),
      recount: await timeIt(
        () =>
          Effect.runPromise(sql`SELECT queue, state, count(*)::int AS count FROM effect_jobs.jobs
                                WHERE state IN ('completed', 'dead', 'cancelled') GROUP BY queue, state`),
        calls,
        1
      )
    })))
  results.push(summary("(before) the overview's GROUP BY per request, on the database", direct.groupBy))
  results.push(summary("(now) the recount of finished jobs, once per interval, on the database", direct.recount))

  console.log(`| call | median ms | p95 ms | |\n| --- | ---: | ---: | --- |`)
  for (const r of results) console.log(`| ${r.call} | ${r.medianMs} | ${r.p95Ms} | ${r.note ?? ""} |`)
  const out = flag("out")
  if (out !== undefined) {
    writeFileSync(out, JSON.stringify({
      postgres: version!.v,
      source: embedded !== undefined ? "embedded" : "server URL",
      rows,
      calls,
      at: new Date().toISOString(),
      results
    }, null, 2) + "\n")
  }
} finally {
  await Effect.runPromise(Scope.close(scope, Exit.void))
  await withSql(server, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`))
  await embedded?.stop()
}
