/**
 * The hot path's cost in WAL and in committed rate: one drain of `--jobs` no-op jobs by one
 * worker, on a fresh database, measured by the server's WAL position before and after
 * (`pg_current_wal_lsn()`) and by the time until the last outcome was written. For issue 15:
 * what the per-minute throughput rollup and the finished-only indexes of migrations/0009 cost
 * each job. Prints one JSON line.
 *
 *   node bench/wal.ts <server url> [--jobs 20000] [--concurrency 24] [--retention 0|1d]
 *                     [--keyed] [--drop index,index] [--sql statement] [--job-ms n] [--label text]
 *
 * --retention 0: completed jobs are deleted (the library's bench default row); 1d: kept a
 *   day (an UPDATE per finish, which is what the finished-only indexes are written by).
 * --keyed: every job has a unique key (the unique-key indexes are written).
 * --job-ms: each handler waits this long; with --concurrency 1 every flush of outcomes then
 *   carries one (the worst case of anything written per flush).
 * --drop: indexes dropped after migrating, to see one index's share; --sql: a statement run
 *   after that (another index to compare).
 *
 * The WAL position is the server's: run it on a server nothing else writes to (a private
 * cluster, or the embedded Postgres). The jobs are inserted with one INSERT ... SELECT after a
 * CHECKPOINT, so the drain modifies pages already written since the checkpoint (no full-page
 * images), as in a queue that runs continuously. Needs `--conditions=@effect-jobs/source`
 * (as `npm run bench` sets) or a built package.
 */
import { Effect, Exit, Layer, Schema, Scope } from "effect"
import { Database, Job, Migrations, Observer, Worker } from "effect-jobs"
import { performance } from "node:perf_hooks"
import { withDatabase, withSql } from "./sql.ts"

const args = process.argv.slice(2)
const url = args[0]
if (url === undefined || url.startsWith("--")) {
  console.error("usage: node bench/wal.ts <server url> [--jobs n] [--concurrency n] [--retention 0|1d] [--keyed] [--drop a,b] [--label x]")
  process.exit(2)
}
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`)
  return i === -1 ? undefined : args[i + 1]
}
const jobs = Number(flag("jobs") ?? 20_000)
const concurrency = Number(flag("concurrency") ?? 24)
const retained = (flag("retention") ?? "0") !== "0"
const keyed = args.includes("--keyed")
const drop = (flag("drop") ?? "").split(",").filter((s) => s !== "")
/** Statements run after migrating (and dropping), e.g. another index to compare: `--sql "CREATE INDEX ..."`. */
const extra = flag("sql")
const label = flag("label") ?? ""
/** Each handler waits this long (a timer): with concurrency 1, every flush carries one outcome. */
const jobMillis = Number(flag("job-ms") ?? 0)

const Noop = Job.make("noop", { args: Schema.Struct({}), queue: "default" })

const database = `bench_wal_${process.pid}_${Date.now().toString(36)}`
await withSql(url, (sql) => sql.unsafe(`CREATE DATABASE "${database}"`))
const db = withDatabase(url, database)
try {
  await Effect.runPromise(Effect.provide(Migrations.run, Database.layer(db, { maxConnections: 1 })))
  await withSql(db, (sql) =>
    Effect.gen(function*() {
      for (const index of drop) yield* sql.unsafe(`DROP INDEX effect_jobs."${index}"`)
      if (extra !== undefined) yield* sql.unsafe(extra)
      yield* sql.unsafe("CHECKPOINT")
      yield* sql.unsafe(
        `INSERT INTO effect_jobs.jobs (name, queue, args, unique_key, retention_ms)
         SELECT 'noop', 'default', '{}', ${keyed ? "'k' || g" : "NULL"}, ${retained ? 86_400_000 : 0}
         FROM generate_series(1, ${jobs}) AS g`
      )
    }))
  const [before] = await withSql(db, (sql) => sql<{ readonly lsn: string }>`SELECT pg_current_wal_lsn()::text AS lsn`)

  let written = 0
  let done: () => void = () => {}
  const allWritten = new Promise<void>((resolve) => (done = resolve))
  let endedAt = 0
  const scope = Effect.runSync(Scope.make())
  const worker = Worker.layer({ queues: { default: { concurrency } } }).pipe(
    Layer.provide(Job.toLayer(Noop, () => (jobMillis > 0 ? Effect.sleep(jobMillis) : Effect.void))),
    // `completed` is reported once the outcome is written: the last one ends the clock.
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
  const [after] = await withSql(db, (sql) =>
    sql<{ readonly bytes: string }>`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), ${before!.lsn}::pg_lsn)::text AS bytes`)
  const walBytes = Number(after!.bytes)
  const wallMs = endedAt - startedAt
  console.log(JSON.stringify({
    label,
    jobs,
    retained,
    keyed,
    drop,
    ...(extra === undefined ? {} : { sql: extra }),
    walBytes,
    walPerJob: Math.round(walBytes / jobs),
    wallMs: Math.round(wallMs),
    committedPerSecond: Math.round(jobs / (wallMs / 1000))
  }))
} finally {
  await withSql(url, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`))
}
