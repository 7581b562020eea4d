/**
 * A worker process for the chaos suite: `node test/chaos/worker.ts '<json WorkerConfig>'`.
 *
 * It runs the `chaos` and `chaos-timed` jobs (test/chaos/jobs.ts) on one queue
 * and talks to the test on stdout, one line per event:
 *
 *   ready <pid>                     the worker layer is built (it is claiming)
 *   started <job id> <attempt>      a run began (only for jobs enqueued with `announce`)
 *   error <json>                    a worker error reported to the Observer
 *   stopped                         graceful shutdown finished (after SIGTERM)
 *
 * SIGTERM closes the worker's layer scope, which is the library's graceful
 * shutdown (grace period, then interrupt and release), and exits when it is
 * done. SIGKILL and SIGSTOP are what the tests use to simulate crashes and
 * a frozen process.
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { say, serve } from "./child.ts"
import { Job, Observer, Worker } from "../../src/index.ts"
import { Chaos, type ChaosArgs, ChaosTimed, workerApplicationName } from "./jobs.ts"

export interface WorkerConfig {
  readonly url: string
  readonly queue: string
  readonly workerId: string
  readonly concurrency: number
  readonly pollMs?: number | undefined
  readonly leaseMs?: number | undefined
  readonly heartbeatMs?: number | undefined
  readonly graceMs?: number | undefined
  readonly maintenanceMs?: number | undefined
  readonly listen?: boolean | undefined
  /** PgClient `prepare` (false behind a transaction-mode pooler). */
  readonly prepare?: boolean | undefined
  /** PgClient `maxConnections`. */
  readonly pool?: number | undefined
}

const config = JSON.parse(process.argv[2]!) as WorkerConfig

class Failed {
  readonly _tag = "Failed"
  readonly message = "failing on purpose"
}

const handler = (args: ChaosArgs, ctx: Job.JobContext) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const [run] = yield* sql<{ readonly id: string }>`
      INSERT INTO chaos_runs (job_id, pid, attempt, token)
      VALUES (${ctx.id}::bigint, ${process.pid}, ${ctx.attempt}, ${ctx.runs}) RETURNING id::text`
    if (args.announce === true) say(`started ${ctx.id} ${ctx.attempt}`)
    const work = Effect.sleep(Duration.millis(args.firstSleepMs !== undefined && ctx.attempt === 1 ? args.firstSleepMs : args.sleepMs))
    yield* args.hold === true ? sql.withTransaction(Effect.andThen(sql`SELECT 1`, work)) : work
    if (args.stubbornMs !== undefined && ctx.attempt === 1) yield* Effect.uninterruptible(Effect.sleep(Duration.millis(args.stubbornMs)))
    const failing = args.failUntil !== undefined && ctx.attempt <= args.failUntil
    yield* sql`UPDATE chaos_runs SET finished_at = clock_timestamp(), outcome = ${failing ? "failed" : "ok"}
               WHERE id = ${run!.id}::bigint`
    if (failing) return yield* Effect.fail(new Failed())
  })

const events: Observer.Events = {
  ...Observer.noop,
  workerError: (queue, message, cause) =>
    Effect.sync(() => say(`error ${JSON.stringify({ queue, message, cause: cause === undefined ? undefined : String(cause) })}`))
}

const WorkerLive = Worker.layer({
  queues: { [config.queue]: { concurrency: config.concurrency, pollInterval: config.pollMs ?? 200 } },
  workerId: config.workerId,
  lease: config.leaseMs ?? 2000,
  heartbeatInterval: config.heartbeatMs ?? 500,
  gracePeriod: config.graceMs ?? 2000,
  maintenanceInterval: config.maintenanceMs ?? 250,
  listen: config.listen ?? true
}).pipe(
  Layer.provide([Job.toLayer(Chaos, handler), Job.toLayer(ChaosTimed, handler), Observer.replace(events)]),
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
    process.stderr.write(`chaos worker failed: ${String(cause)}\n`)
    process.exit(1)
  })
)))
