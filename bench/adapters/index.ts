/**
 * The benchmarked systems, in table order. Each entry loads its module lazily so a child
 * process only imports the library it benchmarks.
 */
import type { Adapter } from "../adapter.ts"

export interface AdapterEntry {
  readonly name: string
  /** Short description for the report. */
  readonly description: string
  readonly load: () => Promise<Adapter>
}

export const adapters: ReadonlyArray<AdapterEntry> = [
  {
    name: "graphile-worker",
    description: "graphile-worker 0.18.0, defaults (concurrency N, maxPoolSize N+1)",
    load: async () => (await import("./graphile-worker.ts")).make({ batched: false })
  },
  {
    name: "graphile-worker-batched",
    description: "graphile-worker 0.18.0, localQueue.size 500, completeJobBatchDelay 0, failJobBatchDelay 0",
    load: async () => (await import("./graphile-worker.ts")).make({ batched: true })
  },
  {
    name: "pg-boss",
    description: "pg-boss 12.38.0, 4 workers x batchSize 100, pollingIntervalSeconds 0.5, polling only",
    load: async () => (await import("./pg-boss.ts")).make({ tuned: false })
  },
  {
    name: "pg-boss-tuned",
    description: "pg-boss 12.38.0, as pg-boss + burstWhenBatchFull + LISTEN/NOTIFY (useListenNotify, queue notify)",
    load: async () => (await import("./pg-boss.ts")).make({ tuned: true })
  },
  {
    name: "effect-persisted-queue",
    description: "effect 4.1.0 PersistedQueue + layerStoreSql (poll 1 s), 64 takers, PgClient pool 10",
    load: async () => (await import("./effect-persisted-queue.ts")).make()
  },
  {
    name: "effect-jobs",
    description: "effect-jobs (this library)",
    load: async () => (await import("./effect-jobs.ts")).make()
  },
  {
    name: "pgbench-floor",
    description: "raw SQL floor: pgbench, 8 clients, claim 100 rows FOR UPDATE SKIP LOCKED + DELETE",
    load: async () => (await import("./pgbench.ts")).make()
  }
]

export const findAdapter = (name: string): AdapterEntry | undefined => adapters.find((a) => a.name === name)
