/**
 * pg-boss 12.38.0.
 *
 * - `pg-boss`: the configuration from the brief: one `work()` call with
 *   `localConcurrency: 4` workers × `batchSize: 100`, `pollingIntervalSeconds: 0.5`,
 *   plain polling (pg-boss's default: `useListenNotify` is off unless asked for).
 *   After each fetch a pg-boss worker waits out the polling interval, even when the
 *   batch was full, so drain throughput is capped near 4 × 100 / 0.5 s = 800 jobs/s.
 * - `pg-boss-tuned`: the same plus pg-boss's own knobs for this workload:
 *   `burstWhenBatchFull: true` (keep fetching while batches come back full) and
 *   LISTEN/NOTIFY wake-ups (`useListenNotify: true` on the instance, `notify: true` on the queue).
 *
 * v12 requires `createQueue(name)` before sending. Enqueue uses `insert(name, jobs[])`
 * (one `json_to_recordset` statement per call).
 */
import { PgBoss } from "pg-boss"
import type { ConstructorOptions, JobInsert, WorkOptions } from "pg-boss"
import type { Adapter, DrainResult, WakeOptions } from "../adapter.ts"
import { CompletionMeter, measureWake, timed, WakeProbe } from "../adapter.ts"

const QUEUE = "noop"
const INSERT_CHUNK = 20_000

export const make = (options: { readonly tuned: boolean }): Adapter => {
  let url = ""
  let boss: PgBoss | undefined

  const newBoss = (extra: ConstructorOptions = {}): PgBoss => {
    const instance = new PgBoss({
      connectionString: url,
      ...(options.tuned ? { useListenNotify: true } : {}),
      ...extra
    })
    instance.on("error", (error) => {
      process.stderr.write(`pg-boss error: ${String(error)}\n`)
    })
    return instance
  }

  const workOptions = (concurrency: number): WorkOptions => ({
    localConcurrency: concurrency,
    batchSize: 100,
    pollingIntervalSeconds: 0.5,
    ...(options.tuned ? { burstWhenBatchFull: true } : {})
  })

  const started = (): PgBoss => {
    if (boss === undefined) throw new Error("pg-boss adapter: setup() was not called")
    return boss
  }

  return {
    name: options.tuned ? "pg-boss-tuned" : "pg-boss",

    async setup(databaseUrl) {
      url = databaseUrl
      boss = newBoss()
      await boss.start()
      await boss.createQueue(QUEUE, options.tuned ? { notify: true } : {})
    },

    async enqueueMany(count) {
      const b = started()
      for (let offset = 0; offset < count; offset += INSERT_CHUNK) {
        const n = Math.min(INSERT_CHUNK, count - offset)
        const jobs: Array<JobInsert> = Array.from({ length: n }, () => ({ data: {} }))
        await b.insert(QUEUE, jobs)
      }
    },

    // `concurrency` is not used: the brief fixes pg-boss at 4 workers × batchSize 100.
    // job_state is an enum ordered created < retry < active < completed < cancelled < failed
    pendingQuery: "SELECT count(*)::int AS n FROM pgboss.job WHERE state < 'completed'",

    async drain(count, _concurrency): Promise<DrainResult> {
      const b = started()
      const meter = new CompletionMeter(count)
      meter.start()
      await b.work(QUEUE, workOptions(4), async (jobs) => {
        meter.complete(jobs.length)
      })
      const measured = await meter.done
      const stopMs = await timed(() => b.offWork(QUEUE, { wait: true }))
      return { ...measured, stopMs }
    },

    async wakeLatency(wake: WakeOptions) {
      const b = started()
      const probe = new WakeProbe()
      await b.work(QUEUE, workOptions(4), async () => {
        probe.hit()
      })
      // A second, send-only instance with its own pool plays the producer process.
      const producer = newBoss({ supervise: false, schedule: false, migrate: false })
      await producer.start()
      try {
        return await measureWake({
          ...wake,
          probe,
          jitterMs: options.tuned ? 0 : 500,
          enqueue: () => producer.send(QUEUE, {})
        })
      } finally {
        await producer.stop({ graceful: false })
        await b.offWork(QUEUE, { wait: true })
      }
    },

    async teardown() {
      await boss?.stop({ graceful: false })
      boss = undefined
    }
  }
}
