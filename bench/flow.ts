/**
 * The gated claim's cost (issue 16): one drain of `--jobs` no-op jobs by one worker, on a
 * fresh database, plain queue vs the same queue with a `flow` option. Prints one JSON line.
 *
 *   node --conditions=@effect-jobs/source bench/flow.ts <server url>
 *        [--mode plain|per-group|sequence|global] [--jobs 20000] [--concurrency 24] [--groups 10000] [--prefetch n]
 *
 * plain:     no flow (the plain claim, src/internal/Store.ts jobClaim);
 * per-group: `flow: { perGroup: 1 }`, the jobs spread over `--groups` distinct groups;
 * sequence:  `flow: { sequence: true }`, over `--groups` groups;
 * global:    `flow: { global: <concurrency> }`, no groups.
 * --prefetch: set it explicitly (plain: adaptive by default; flow queues: 0 by default).
 * --stats:  also print the gated claim's calls and time inside it (pg_stat_user_functions).
 * --no-analyze: skip the VACUUM ANALYZE after the insert (the table as a fresh one is).
 * The rate is jobs / time from the worker's start until the last outcome was written.
 */
import { Effect, Exit, Layer, Schema, Scope } from "effect"
import { Database, Job, Migrations, Observer, Worker } from "effect-jobs"
import { performance } from "node:perf_hooks"
import { withDatabase, withSql } from "./sql.ts"

const args = process.argv.slice(2)
const url = args[0]
if (url === undefined || url.startsWith("--")) {
  console.error("usage: node bench/flow.ts <server url> [--mode plain|per-group|sequence|global] [--jobs n] [--concurrency n] [--groups n]")
  process.exit(2)
}
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`)
  return i === -1 ? undefined : args[i + 1]
}
const mode = flag("mode") ?? "plain"
const jobs = Number(flag("jobs") ?? 20_000)
const concurrency = Number(flag("concurrency") ?? 24)
const groups = Number(flag("groups") ?? 10_000)
const flow: Worker.FlowOptions | undefined = mode === "per-group"
  ? { perGroup: 1 }
  : mode === "sequence"
  ? { sequence: true }
  : mode === "global"
  ? { global: concurrency }
  : undefined

const Noop = Job.make("noop", { args: Schema.Struct({}), queue: "default" })

const database = `bench_flow_${process.pid}_${Date.now().toString(36)}`
await withSql(url, (sql) => sql.unsafe(`CREATE DATABASE "${database}"`))
const db = withDatabase(url, database)
try {
  await Effect.runPromise(Effect.provide(Migrations.run, Database.layer(db, { maxConnections: 1 })))
  await withSql(db, (sql) =>
    sql.unsafe(
      `INSERT INTO effect_jobs.jobs (name, queue, args, retention_ms, group_key)
       SELECT 'noop', 'default', '{}', 0, ${mode === "per-group" || mode === "sequence" ? `'g' || (g % ${groups})` : "NULL"}
       FROM generate_series(1, ${jobs}) AS g`
    ))
  // --no-analyze: leave the table as the enqueue left it, never analyzed (a fresh table where
  // autovacuum is off or has not come round yet, as in `npm run bench` on the machine's PG15)
  if (!args.includes("--no-analyze")) await withSql(db, (sql) => sql.unsafe("VACUUM ANALYZE effect_jobs.jobs"))
  const stats = args.includes("--stats")
  if (stats) await withSql(url, (sql) => sql.unsafe(`ALTER DATABASE "${database}" SET track_functions = 'all'`))

  let written = 0
  let done: () => void = () => {}
  const allWritten = new Promise<void>((resolve) => (done = resolve))
  let endedAt = 0
  const scope = Effect.runSync(Scope.make())
  const prefetch0 = flag("prefetch") === undefined ? {} : { prefetch: Number(flag("prefetch")) }
  const worker = Worker.layer({ queues: { default: { concurrency, ...prefetch0, ...(flow === undefined ? {} : { flow }) } } }).pipe(
    Layer.provide(Job.toLayer(Noop, () => Effect.void)),
    Layer.provide(Observer.add({
      ...Observer.noop,
      completed: () =>
        Effect.sync(() => {
          if (++written === jobs) {
            endedAt = performance.now()
            done()
          }
        })
    })),
    Layer.provide(Database.layer(db))
  )
  const startedAt = performance.now()
  await Effect.runPromise(Layer.buildWithScope(worker, scope))
  await allWritten
  await Effect.runPromise(Scope.close(scope, Exit.void))
  const wallMs = endedAt - startedAt
  // (the worker's connections are closed: their function counts are flushed)
  // Every function the claim called: [calls, total ms, self ms]; the claim's own in claimStats.
  const functions = stats
    ? Object.fromEntries(
      (await withSql(db, (sql) =>
        sql.unsafe<{ funcname: string; calls: string; total_ms: number; self_ms: number }>(
          `SELECT funcname, calls, total_time AS total_ms, self_time AS self_ms FROM pg_stat_user_functions ORDER BY funcname`
        ))).map((f) => [f.funcname, [Number(f.calls), Math.round(f.total_ms), Math.round(f.self_ms)]] as const)
    )
    : undefined
  const claim = functions?.["claim_gated"]
  const claimStats = claim === undefined ? {} : {
    claims: claim[0],
    jobsPerClaim: Math.round(jobs / claim[0] * 10) / 10,
    msInClaims: claim[1]
  }
  console.log(JSON.stringify({ mode, jobs, concurrency, ...(mode === "per-group" || mode === "sequence" ? { groups } : {}), wallMs: Math.round(wallMs), perSecond: Math.round(jobs / (wallMs / 1000)), ...claimStats, ...(functions === undefined ? {} : { functions }) }))
} finally {
  await withSql(url, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`))
}
