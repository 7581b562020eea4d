/**
 * The benchmarked systems, in table order. Each entry loads its module lazily so a child
 * process only imports the library it benchmarks.
 */
import type { Adapter } from "../adapter.ts"
import type { Scenario } from "../protocol.ts"

export interface AdapterEntry {
  readonly name: string
  /** Short description for the report. */
  readonly description: string
  readonly load: () => Promise<Adapter>
  /**
   * The scenarios this entry takes part in (default: drain, enqueue, wake). The runner does
   * not start a child for the others. The extra scenarios need `startWorkers` (scaleout) or
   * `addFiller` (drain-history, drain-future); `soak` needs only `drain`.
   */
  readonly scenarios?: ReadonlyArray<Scenario>
}

const effectJobs = (
  name: string,
  deleteOnComplete: boolean,
  prefetch: number | undefined,
  flow?: { readonly mode: "per-group"; readonly groups: number } | { readonly mode: "global" },
  observed?: boolean
) =>
async () => (await import("./effect-jobs.ts")).make({ name, deleteOnComplete, prefetch, flow, observed })

export const adapters: ReadonlyArray<AdapterEntry> = [
  {
    name: "graphile-worker",
    description: "graphile-worker 0.18.0, defaults (concurrency N, maxPoolSize N+1, at most 50)",
    load: async () => (await import("./graphile-worker.ts")).make({ batched: false }),
    scenarios: ["drain", "enqueue", "wake", "io"]
  },
  {
    name: "graphile-worker-batched",
    description: "graphile-worker 0.18.0, localQueue.size 500, completeJobBatchDelay 0, failJobBatchDelay 0",
    load: async () => (await import("./graphile-worker.ts")).make({ batched: true }),
    scenarios: ["drain", "enqueue", "wake", "scaleout", "soak", "io", "longtx"]
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
    description: "effect-jobs (this library): retention 0 (completed jobs deleted), prefetch default (adaptive: concurrency up to ~100 ms of work, max 1000)",
    load: effectJobs("effect-jobs", true, undefined),
    scenarios: ["drain", "enqueue", "wake", "drain-history", "drain-future", "scaleout", "soak", "io", "longtx"]
  },
  {
    name: "effect-jobs-prefetch500",
    description: "effect-jobs: retention 0, prefetch 500 (claims ahead of free slots, cf. graphile localQueue 500)",
    load: effectJobs("effect-jobs-prefetch500", true, 500),
    // enqueue is the same code path as effect-jobs: not repeated
    scenarios: ["drain", "wake", "drain-history", "drain-future", "scaleout"]
  },
  {
    name: "effect-jobs-retained",
    description: "effect-jobs: default retention (completed jobs kept 1 day), prefetch default (adaptive: concurrency up to ~100 ms of work, max 1000)",
    load: effectJobs("effect-jobs-retained", false, undefined),
    scenarios: ["drain", "drain-history", "drain-future"]
  },
  {
    name: "effect-jobs-retained-prefetch500",
    description: "effect-jobs: default retention (completed jobs kept 1 day), prefetch 500",
    load: effectJobs("effect-jobs-retained-prefetch500", false, 500),
    scenarios: ["drain"]
  },
  {
    name: "effect-jobs-per-group",
    description: "effect-jobs: retention 0, flow: { perGroup: 1 } over 10,000 groups (gated claim), prefetch 500",
    load: effectJobs("effect-jobs-per-group", true, 500, { mode: "per-group", groups: 10_000 }),
    scenarios: ["drain"]
  },
  {
    name: "effect-jobs-global",
    description: "effect-jobs: retention 0, flow: { global: concurrency } (gated claim), prefetch 500",
    load: effectJobs("effect-jobs-global", true, 500, { mode: "global" }),
    scenarios: ["drain"]
  },
  {
    name: "effect-jobs-observed",
    description: "effect-jobs: retention 0, prefetch default, with Observer.layer (metrics + logging observers, as an app exporting metrics runs it)",
    load: effectJobs("effect-jobs-observed", true, undefined, undefined, true),
    scenarios: ["drain"]
  },
  {
    name: "pgbench-floor",
    description: "raw SQL floor: pgbench, 8 clients, claim 100 rows FOR UPDATE SKIP LOCKED + DELETE",
    load: async () => (await import("./pgbench.ts")).make()
  }
]

export const findAdapter = (name: string): AdapterEntry | undefined => adapters.find((a) => a.name === name)
