/**
 * A worker process for the flow-control scenarios: `node test/chaos/flow-worker.ts '<json FlowWorkerConfig>'`.
 *
 * It serves one queue with the `flow` job (test/chaos/flow-jobs.ts), with the queue's
 * settings (concurrency, prefetch, `flow`) taken from the JSON argument, and speaks the
 * line protocol of test/chaos/worker.ts on stdout (`ready <pid>`, `error <json>`, `stopped`),
 * so `spawnWorker` (test/chaos/support.ts) starts it with `{ script: "flow-worker.ts" }`.
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { say, serve } from "./child.ts"
import { Job, Observer, Worker } from "../../src/index.ts"
import { FlowJob, type FlowArgs } from "./flow-jobs.ts"
import { workerApplicationName } from "./jobs.ts"
import type { WorkerConfig } from "./worker.ts"

export interface FlowWorkerConfig extends WorkerConfig {
  /** `QueueConfig.prefetch`; unset: the library's default. */
  readonly prefetch?: number | undefined
  /** `QueueConfig.flow`; unset: a plain queue. */
  readonly flow?: Worker.FlowOptions | undefined
}

const config = JSON.parse(process.argv[2]!) as FlowWorkerConfig

class Failed {
  readonly _tag = "Failed"
  readonly message = "failing on purpose"
}

const handler = (args: FlowArgs, ctx: Job.JobContext) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const [run] = yield* sql<{ readonly id: string }>`
      INSERT INTO flow_log (queue, job_id, grp, pid, attempt)
      VALUES (${ctx.queue}, ${ctx.id}::bigint, ${args.grp}, ${process.pid}, ${ctx.attempt}) RETURNING id::text`
    yield* Effect.sleep(Duration.millis(args.sleepMs))
    const failing = args.failUntil !== undefined && ctx.attempt <= args.failUntil
    yield* sql`UPDATE flow_log SET ended_at = clock_timestamp(), outcome = ${failing ? "failed" : "ok"}
               WHERE id = ${run!.id}::bigint`
    if (failing) return yield* Effect.fail(new Failed())
  })

const events: Observer.Events = {
  ...Observer.noop,
  workerError: (queue, message, cause) =>
    Effect.sync(() => say(`error ${JSON.stringify({ queue, message, cause: cause === undefined ? undefined : String(cause) })}`))
}

const queueConfig: Worker.QueueConfig = {
  concurrency: config.concurrency,
  pollInterval: config.pollMs ?? 200,
  ...(config.prefetch === undefined ? {} : { prefetch: config.prefetch }),
  ...(config.flow === undefined ? {} : { flow: config.flow })
}

const WorkerLive = Worker.layer({
  queues: { [config.queue]: queueConfig },
  workerId: config.workerId,
  lease: config.leaseMs ?? 2000,
  heartbeatInterval: config.heartbeatMs ?? 500,
  gracePeriod: config.graceMs ?? 2000,
  maintenanceInterval: config.maintenanceMs ?? 250,
  listen: config.listen ?? true
}).pipe(
  Layer.provide([Job.toLayer(FlowJob, handler), Observer.replace(events)]),
  Layer.provideMerge(PgClient.layer({
    url: Redacted.make(config.url),
    maxConnections: config.pool ?? 10,
    prepare: config.prepare ?? true,
    applicationName: workerApplicationName(config.workerId)
  }))
)

const main = serve(WorkerLive)

Effect.runFork(main.pipe(Effect.catchCause((cause) =>
  Effect.sync(() => {
    process.stderr.write(`flow worker failed: ${String(cause)}\n`)
    process.exit(1)
  })
)))
