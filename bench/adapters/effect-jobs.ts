/**
 * effect-jobs (this library), through its public API only (`import ... from "effect-jobs"`).
 *
 * One job definition, `noop` (args `{}`), on the `default` queue, in one of four variants:
 *
 * | variant                            | retention          | prefetch                  |
 * |------------------------------------|--------------------|---------------------------|
 * | `effect-jobs`                      | 0 (delete on done) | default (adaptive)        |
 * | `effect-jobs-prefetch500`          | 0 (delete on done) | 500                       |
 * | `effect-jobs-retained`             | default (1 day)    | default (adaptive)        |
 * | `effect-jobs-retained-prefetch500` | default (1 day)    | 500                       |
 * | `effect-jobs-observed`             | 0 (delete on done) | default, and `Observer.layer` (metrics + logging) |
 *
 * `retention: 0` is what graphile-worker (the ratio baseline) and the pgbench floor do:
 * a completed job is deleted. pg-boss and PersistedQueue keep completed rows (an UPDATE),
 * which is what the `-retained` rows do. `prefetch` is how many jobs a worker claims ahead
 * of its free slots; graphile's batched row uses `localQueue.size` 500 for the same idea.
 *
 * - setup: `Migrations.run` on a `Database.layer(url)` pool, plus a `Jobs.layer` client.
 * - enqueueMany: `Jobs.enqueueMany`, one statement per 20,000 jobs (graphile's chunk too).
 * - drain: a `Worker.layer({ queues: { default: { concurrency, prefetch } } })` with its own
 *   `Database.layer(url)` pool (as a worker process would have), built in a scope just after
 *   `meter.start()`; the handler counts (`meter.complete(1)`), like the other adapters. An
 *   `Observer.add` hook on `completed` (which fires after the outcome is written) records
 *   when the last outcome was durable (`durableWallMs`). The scope is then closed (graceful
 *   shutdown: every outcome written, or given up after the worker's shutdown budget) and the
 *   jobs still `available`/`running` are counted (`notWritten`, normally 0).
 * - wakeLatency: an idle worker; a second `Database.layer` + `Jobs.layer` runtime (its own
 *   pool, as a web process would be) enqueues one job at a time; the handler hits the probe.
 *   The worker LISTENs (the insert trigger NOTIFYs), so no jitter.
 * - startWorkers / addFiller: for the scale-out, soak and history scenarios.
 *
 * Worker options other than concurrency/prefetch are the library's defaults (default
 * middleware on: a span and log annotations per run; pool of 10 connections). For
 * experiments only (never in the published table), `BENCH_EFFECT_JOBS_WORKER_OPTIONS` is
 * JSON merged into the Worker options, e.g. '{"defaultMiddleware":false}'.
 */
import { Effect, Exit, Layer, ManagedRuntime, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { Database, Job, Jobs, Migrations, Observer, Worker } from "effect-jobs"
import { performance } from "node:perf_hooks"
import type { Adapter, DrainResult, FillerKind, RunningWorkers, WakeOptions } from "../adapter.ts"
import { CompletionMeter, measureWake, timed, WakeProbe } from "../adapter.ts"

export interface Variant {
  readonly name: string
  /** `true`: `retention: 0` (completed jobs are deleted); `false`: the default retention (1 day). */
  readonly deleteOnComplete: boolean
  /** Worker `prefetch`; undefined = the library default (adaptive: from concurrency up to ~100 ms of work, at most 1000). */
  readonly prefetch: number | undefined
  /**
   * Flow control (issue 16's bench): "per-group" = `flow: { perGroup: 1 }` with the jobs spread
   * over `groups` groups; "global" = `flow: { global: <the drain's concurrency> }`.
   */
  readonly flow?: { readonly mode: "per-group"; readonly groups: number } | { readonly mode: "global" } | undefined
  /** `true`: the worker runs with `Observer.layer` (the metrics and logging observers), as an app that exports metrics would. */
  readonly observed?: boolean | undefined
}

const ENQUEUE_CHUNK = 20_000
const QUEUE = "default"

/** Extra Worker options for experiments (see the header); {} normally. */
const extraWorkerOptions = (): Partial<Worker.Options> => {
  const text = process.env["BENCH_EFFECT_JOBS_WORKER_OPTIONS"]
  return text === undefined || text === "" ? {} : (JSON.parse(text) as Partial<Worker.Options>)
}

type Base = ManagedRuntime.ManagedRuntime<Jobs.Jobs | SqlClient.SqlClient, unknown>

export const make = (variant: Variant): Adapter => {
  let url = ""
  let base: Base | undefined
  const Noop = Job.make("noop", {
    // `t`: performance.now() at the enqueue, for the longtx scenario's claim latency
    args: Schema.Struct({ t: Schema.optional(Schema.Number) }),
    queue: QUEUE,
    ...(variant.deleteOnComplete ? { retention: 0 } : {})
  })

  const ready = (): Base => {
    if (base === undefined) throw new Error("effect-jobs adapter: setup() was not called")
    return base
  }

  /**
   * Builds a worker in a fresh scope (its own pool). `onStart` runs in the handler,
   * `onDurable` from the Observer's `completed` event (after the outcome is written).
   */
  const startWorker = async (
    concurrency: number,
    onStart: () => void,
    onDurable?: () => void,
    jobMillis = 0,
    onBegin?: (enqueuedAt: number | undefined) => void
  ): Promise<RunningWorkers> => {
    const scope = Effect.runSync(Scope.make())
    const handler = Job.toLayer(
      Noop,
      onBegin !== undefined
        ? (args) => Effect.andThen(Effect.sync(() => onBegin(args.t)), Effect.sync(onStart))
        : jobMillis > 0
        ? () => Effect.andThen(Effect.sleep(jobMillis), Effect.sync(onStart))
        : () => Effect.sync(onStart)
    )
    const durable: Observer.Events | undefined = onDurable === undefined
      ? undefined
      : { ...Observer.noop, completed: () => Effect.sync(onDurable) }
    // (`combine` drops a `noop` part: `layerWith(noop)` is `Observer.layer` itself)
    const observer = variant.observed === true
      ? Observer.layerWith(durable ?? Observer.noop)
      : durable === undefined
      ? Layer.empty
      : Observer.add(durable)
    const worker = Worker.layer({
      ...extraWorkerOptions(),
      queues: {
        [QUEUE]: {
          concurrency,
          ...(variant.prefetch !== undefined ? { prefetch: variant.prefetch } : {}),
          ...(variant.flow === undefined
            ? {}
            : { flow: variant.flow.mode === "global" ? { global: concurrency } : { perGroup: 1 } })
        }
      }
    }).pipe(
      Layer.provide(handler),
      Layer.provide(observer),
      Layer.provide(Database.layer(url, { applicationName: `bench-${variant.name}-worker` }))
    )
    await Effect.runPromise(Layer.buildWithScope(worker, scope))
    return { stop: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
  }

  /** What is left in the table that should not be (after a drain of everything). */
  const leftovers = () =>
    ready().runPromise(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ readonly n: number }>`
        SELECT count(*)::int AS n FROM effect_jobs.jobs
        WHERE name = 'noop' AND state IN ('available', 'running')`
      return rows[0]?.n ?? 0
    }))

  return {
    name: variant.name,

    async setup(databaseUrl) {
      url = databaseUrl
      base = ManagedRuntime.make(
        Jobs.layer.pipe(Layer.provideMerge(Database.layer(url, { applicationName: `bench-${variant.name}` })))
      )
      await base.runPromise(Effect.asVoid(Migrations.run))
    },

    async enqueueMany(count) {
      const rt = ready()
      await rt.runPromise(Effect.gen(function*() {
        const jobs = yield* Jobs.Jobs
        const flow = variant.flow
        for (let offset = 0; offset < count; offset += ENQUEUE_CHUNK) {
          const n = Math.min(ENQUEUE_CHUNK, count - offset)
          if (flow?.mode === "per-group") {
            yield* jobs.enqueueAll(Array.from({ length: n }, (_, i) => ({
              job: Noop,
              args: {},
              options: { group: `g${(offset + i) % flow.groups}` }
            })))
          } else yield* jobs.enqueueMany(Noop, Array.from({ length: n }, () => ({})))
        }
      }))
    },

    // The bench's jobs never fail or wait, so 'available' and 'running' are all their unfinished
    // states (a finished one is deleted or 'completed'). Not 'scheduled': drain-future's filler
    // rows are scheduled for tomorrow. Written so that each half uses a partial index
    // (jobs_claim_idx; jobs_lease_idx, a running job always has a lease): with 1M filler rows a
    // plain `state IN (...)` is a sequential scan, and the poll would measure that scan.
    pendingQuery: `SELECT (SELECT count(*) FROM effect_jobs.jobs WHERE state = 'available')
                        + (SELECT count(*) FROM effect_jobs.jobs WHERE state = 'running' AND lease_expires_at IS NOT NULL) AS n`,

    async enqueueStamped(count) {
      const t = performance.now()
      await ready().runPromise(Effect.gen(function*() {
        const jobs = yield* Jobs.Jobs
        yield* jobs.enqueueMany(Noop, Array.from({ length: count }, () => ({ t })))
      }))
    },

    async drain(count, concurrency): Promise<DrainResult> {
      const meter = new CompletionMeter(count)
      let durable = 0
      let durableAt: number | undefined
      const onDurable = () => {
        if (++durable === count) durableAt = performance.now()
      }
      const t0 = performance.now()
      meter.start()
      const worker = await startWorker(concurrency, () => meter.complete(1), onDurable)
      const measured = await meter.done
      const stopMs = await timed(() => worker.stop())
      // Every outcome should be written by the end of a graceful stop. The worker gives up after
      // a while (a stop must end); what it gave up is reported, not hidden.
      const notWritten = await leftovers()
      return { ...measured, stopMs, durableWallMs: durableAt === undefined ? null : durableAt - t0, notWritten }
    },

    async wakeLatency(wake: WakeOptions) {
      const probe = new WakeProbe()
      const worker = await startWorker(wake.concurrency, () => probe.hit())
      // A separate pool and client enqueues, like a web process would.
      const producer = ManagedRuntime.make(
        Jobs.layer.pipe(Layer.provide(Database.layer(url, { applicationName: `bench-${variant.name}-producer` })))
      )
      try {
        const jobs = await producer.runPromise(Effect.gen(function*() {
          return yield* Jobs.Jobs
        }))
        return await measureWake({
          ...wake,
          probe,
          jitterMs: 0,
          enqueue: () => producer.runPromise(jobs.enqueue(Noop, {}))
        })
      } finally {
        await producer.dispose()
        await worker.stop()
      }
    },

    startWorkers(concurrency, onComplete, options) {
      return startWorker(concurrency, () => onComplete(1), undefined, options?.jobMillis ?? 0, options?.onStart)
    },

    async addFiller(kind: FillerKind, count: number) {
      await ready().runPromise(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        if (kind === "completed") {
          // Finished over the last 12 hours and kept for a day: none is due for pruning during the run.
          yield* sql`
            INSERT INTO effect_jobs.jobs (name, queue, state, args, attempt, claim_count, run_at, created_at,
                                     attempted_at, finalized_at, retention_ms, prune_at)
            SELECT 'noop', ${QUEUE}, 'completed', '{}'::jsonb, 1, 1, t, t, t, t, 86400000, t + interval '1 day'
            FROM (SELECT now() - interval '12 hours' + g * (interval '12 hours' / ${count}) AS t
                  FROM generate_series(1, ${count}) AS g) AS s`
        } else {
          // Due tomorrow: never promoted during the run.
          yield* sql`
            INSERT INTO effect_jobs.jobs (name, queue, state, args, run_at, retention_ms)
            SELECT 'noop', ${QUEUE}, 'scheduled', '{}'::jsonb,
                   now() + interval '1 day' + g * interval '1 millisecond', 86400000
            FROM generate_series(1, ${count}) AS g`
        }
        // A table with history has been vacuumed and analysed by autovacuum long since.
        yield* sql`VACUUM ANALYZE effect_jobs.jobs`
      }))
    },

    async teardown() {
      await base?.dispose()
      base = undefined
    }
  }
}
