/**
 * Where a cold drain spends its time: one fresh process, one fresh database, `jobs` jobs
 * enqueued (not timed), then a worker started and the handler count timed every `every` jobs
 * from just before the worker starts (the clock of the drain scenario).
 *
 *   node bench/timeline.ts <adapter> <url> [--jobs 20000] [--every 2000] [--concurrency 24]
 *
 * Prints one line: when the worker layer was up, the first job, every `every`-th job, the end
 * (ms). For A/B checks, run it several times per variant, interleaved, and compare medians:
 * one run says little on a shared machine. `url` is any database of the server (a scratch
 * database is created next to it and dropped).
 */
import { Effect } from "effect"
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { findAdapter } from "./adapters/index.ts"
import { withDatabase, withSql } from "./sql.ts"

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    jobs: { type: "string", default: "20000" },
    every: { type: "string", default: "2000" },
    concurrency: { type: "string", default: "24" }
  }
})
const [name, url] = positionals
const entry = name === undefined ? undefined : findAdapter(name)
if (entry === undefined || url === undefined) {
  console.error("usage: node bench/timeline.ts <adapter> <url> [--jobs N] [--every N] [--concurrency N]")
  process.exit(2)
}
const jobs = Number(values.jobs)
const every = Number(values.every)
const database = `bench_timeline_${process.pid}`
await withSql(url, (sql) => Effect.asVoid(sql.unsafe(`CREATE DATABASE ${database}`)))
const scratch = withDatabase(url, database)
try {
  const adapter = await entry.load()
  if (adapter.startWorkers === undefined) throw new Error(`${name} cannot start workers on its own`)
  await adapter.setup(scratch)
  await adapter.enqueueMany(jobs)
  await withSql(scratch, (sql) => Effect.asVoid(sql.unsafe("CHECKPOINT")))
  const marks: Array<number> = []
  let done = 0
  let finish!: () => void
  const finished = new Promise<void>((resolve) => (finish = resolve))
  const t0 = performance.now()
  const workers = await adapter.startWorkers(Number(values.concurrency), (n) => {
    for (let i = 0; i < n; i++) {
      done++
      if (done === 1 || done % every === 0) marks.push(performance.now() - t0)
      if (done === jobs) finish()
    }
  })
  const up = performance.now() - t0
  await finished
  const end = performance.now() - t0
  await workers.stop()
  await adapter.teardown()
  const ms = (x: number) => x.toFixed(0)
  console.log(`${name} up ${ms(up)} first ${ms(marks[0]!)} every ${every}: ${marks.slice(1).map(ms).join(" ")} end ${ms(end)}`)
} finally {
  await withSql(url, (sql) => Effect.asVoid(sql.unsafe(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)))
}
