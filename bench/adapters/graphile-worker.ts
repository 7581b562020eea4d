/**
 * graphile-worker 0.18.0, in two configurations:
 *
 * - `graphile-worker`: library defaults (no local queue, no completion batching), with
 *   `concurrency` workers and `maxPoolSize: concurrency + 1`, the pool size graphile's own
 *   performance page uses for concurrentJobs 24 (the default pool of 10 would starve 24 workers).
 * - `graphile-worker-batched`: the configuration of graphile's published performance test
 *   (https://worker.graphile.org/docs/performance): `localQueue: { size: 500 }`,
 *   `completeJobBatchDelay: 0`, `failJobBatchDelay: 0`.
 *
 * Enqueue uses `WorkerUtils.addJobs` (one `graphile_worker.add_jobs(specs)` call per chunk).
 * Wake-up: graphile-worker LISTENs on `jobs:insert` (a trigger NOTIFYs), so no jitter.
 */
import { performance } from "node:perf_hooks"
import { setTimeout as sleep } from "node:timers/promises"
import { Logger, makeWorkerUtils, run, runMigrations } from "graphile-worker"
import type { AddJobsJobSpec, Runner, RunnerOptions, TaskList, WorkerUtils } from "graphile-worker"
import type { Adapter, DrainResult, WakeOptions } from "../adapter.ts"
import { CompletionMeter, measureWake, timed, WakeProbe } from "../adapter.ts"

const silent = new Logger(() => () => {})

/** add_jobs takes one json array; chunk so a single parameter stays a few MB at most. */
const ADD_JOBS_CHUNK = 20_000

/** Upper bound of the worker pool (see runnerOptions). */
const MAX_POOL = 50

export const make = (options: { readonly batched: boolean }): Adapter => {
  let url = ""
  let utils: WorkerUtils | undefined

  const runnerOptions = (concurrency: number, taskList: TaskList): RunnerOptions => ({
    connectionString: url,
    concurrency,
    // concurrency + 1 as graphile's performance page does, capped so that the `io` scenario's
    // concurrency 500 fits the servers' max_connections (a job holds no connection while it waits).
    maxPoolSize: Math.min(concurrency + 1, MAX_POOL),
    taskList,
    logger: silent,
    noHandleSignals: true,
    ...(options.batched
      ? {
          preset: {
            worker: {
              localQueue: { size: 500 },
              completeJobBatchDelay: 0,
              failJobBatchDelay: 0
            }
          }
        }
      : {})
  })

  const getUtils = async (): Promise<WorkerUtils> => {
    utils ??= await makeWorkerUtils({ connectionString: url, logger: silent })
    return utils
  }

  return {
    name: options.batched ? "graphile-worker-batched" : "graphile-worker",

    async setup(databaseUrl) {
      url = databaseUrl
      await runMigrations({ connectionString: url, logger: silent })
    },

    async enqueueMany(count) {
      const workerUtils = await getUtils()
      for (let offset = 0; offset < count; offset += ADD_JOBS_CHUNK) {
        const n = Math.min(ADD_JOBS_CHUNK, count - offset)
        const specs: Array<AddJobsJobSpec> = Array.from({ length: n }, () => ({ identifier: "noop", payload: {} }))
        await workerUtils.addJobs(specs)
      }
    },

    // completed jobs are deleted; what is left is not finished
    pendingQuery: "SELECT count(*)::int AS n FROM graphile_worker._private_jobs",

    async enqueueStamped(count) {
      const workerUtils = await getUtils()
      const t = performance.now()
      await workerUtils.addJobs(Array.from({ length: count }, () => ({ identifier: "noop", payload: { t } })))
    },

    async drain(count, concurrency): Promise<DrainResult> {
      const meter = new CompletionMeter(count)
      const taskList: TaskList = {
        noop: async () => {
          meter.complete(1)
        }
      }
      meter.start()
      const runner: Runner = await run(runnerOptions(concurrency, taskList))
      const measured = await meter.done
      const stopMs = await timed(() => runner.stop())
      return { ...measured, stopMs }
    },

    async wakeLatency(wake: WakeOptions) {
      const probe = new WakeProbe()
      const taskList: TaskList = {
        noop: async () => {
          probe.hit()
        }
      }
      const runner = await run(runnerOptions(wake.concurrency, taskList))
      // A separate pool (WorkerUtils) enqueues, like a web process would.
      const producer = await makeWorkerUtils({ connectionString: url, logger: silent })
      try {
        return await measureWake({
          ...wake,
          probe,
          jitterMs: 0,
          enqueue: () => producer.addJob("noop", {})
        })
      } finally {
        await producer.release()
        await runner.stop()
      }
    },

    async startWorkers(concurrency, onComplete, options) {
      const jobMillis = options?.jobMillis ?? 0
      const onStart = options?.onStart
      const runner = await run(runnerOptions(concurrency, {
        noop: async (payload) => {
          onStart?.((payload as { readonly t?: number } | null)?.t)
          if (jobMillis > 0) await sleep(jobMillis)
          onComplete(1)
        }
      }))
      return { stop: () => runner.stop() }
    },

    async teardown() {
      await utils?.release()
      utils = undefined
    }
  }
}
