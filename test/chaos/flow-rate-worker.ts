/**
 * One worker process of the fleet rate-limit scenario (test/chaos/flow-rate.test.ts):
 * `node test/chaos/flow-rate-worker.ts '<json FlowRateWorkerConfig>'`.
 *
 * It serves queue `rate-fleet` with its own pool, concurrency 8 and, unless told otherwise,
 * `flow: { rate: { limit, interval } }` (the poll interval is the library's default). Each run
 * of the `rate-fleet` job logs its start in `rate_fleet_log` (created by the test) on the
 * database's clock, through this process's own pool, then waits `sleepMs` on a timer.
 * Lines on stdout:
 *
 *   ready <pid>    the worker layer is built (it is claiming)
 *   error <json>   a worker error reported to the Observer
 *   stopped        graceful shutdown finished (after SIGTERM); the process exits 0
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer, Redacted, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { say, serve } from "./child.ts"
import { Job, Observer, RateLimiterStore, Worker } from "../../src/index.ts"
import { workerApplicationName } from "./jobs.ts"

export const queue = "rate-fleet"

const Args = Schema.Struct({ i: Schema.Number, sleepMs: Schema.Number })

export const RateFleetJob = Job.make("rate-fleet", {
  args: Args,
  queue,
  retention: "1 day"
})

export interface FlowRateWorkerConfig {
  readonly url: string
  readonly workerId: string
  /** This process's number in the log. */
  readonly process: number
  readonly concurrency: number
  /** `flow.rate` of the queue; null: a plain queue (no flow control). */
  readonly rate: { readonly limit: number; readonly intervalMillis: number } | null
}

export const logTableDdl = `
  CREATE TABLE IF NOT EXISTS rate_fleet_log (
    id       bigserial PRIMARY KEY,
    job_id   bigint    NOT NULL,
    process  integer   NOT NULL,
    attempt  integer   NOT NULL,
    -- the start of the limiter's window (rate_windows) when the row was written
    window_ms float8,
    at_ms    float8    NOT NULL DEFAULT extract(epoch FROM clock_timestamp())::float8 * 1000
  )`


const layerOf = (config: FlowRateWorkerConfig) => {
  const refillMillis = config.rate === null ? 0 : config.rate.intervalMillis / config.rate.limit
  const handler = (args: typeof Args.Type, ctx: Job.JobContext) =>
    Effect.gen(function*() {
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()
      // Also the start of the limiter's window now (a window's end moves by interval / limit per
      // token taken, from its start: migration 0013), for the test's figures.
      yield* sql`INSERT INTO rate_fleet_log (job_id, process, attempt, window_ms)
                 SELECT ${ctx.id}::bigint, ${config.process}, ${ctx.attempt},
                        (SELECT extract(epoch FROM w.expires_at - w.tokens * ${refillMillis}::float8 * interval '1 millisecond')::float8 * 1000
                         FROM effect_jobs.rate_windows w WHERE w.key = ${RateLimiterStore.queueKey(queue)})`
      yield* Effect.sleep(Duration.millis(args.sleepMs))
    })
  const events: Observer.Events = {
    ...Observer.noop,
    workerError: (q, message, cause) =>
      Effect.sync(() => say(`error ${JSON.stringify({ queue: q, message, cause: cause === undefined ? undefined : String(cause) })}`))
  }
  const queueConfig: Worker.QueueConfig = {
    concurrency: config.concurrency,
    ...(config.rate === null
      ? {}
      : { flow: { rate: { limit: config.rate.limit, interval: Duration.millis(config.rate.intervalMillis) } } })
  }
  return Worker.layer({ queues: { [queue]: queueConfig }, workerId: config.workerId }).pipe(
    Layer.provide([Job.toLayer(RateFleetJob, handler), Observer.replace(events)]),
    Layer.provideMerge(PgClient.layer({
      url: Redacted.make(config.url),
      applicationName: workerApplicationName(config.workerId)
    }))
  )
}

const main = (config: FlowRateWorkerConfig) => serve(layerOf(config))

// The test imports the job and the log table from this file: run only as a program.
if (import.meta.main) {
  const config = JSON.parse(process.argv[2]!) as FlowRateWorkerConfig
  Effect.runFork(main(config).pipe(Effect.catchCause((cause) =>
    Effect.sync(() => {
      process.stderr.write(`flow-rate worker failed: ${String(cause)}\n`)
      process.exit(1)
    })
  )))
}
