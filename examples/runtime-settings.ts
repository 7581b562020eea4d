/**
 * Settings that change at run time: a queue's `concurrency` and the worker's `retention`
 * given as Effects (`Worker.Setting`). Here they come from a `Ref` (in an application: a
 * feature-flag client, a row of your own, an `effect/Config` such as
 * `Config.Int("EXPORT_CONCURRENCY")`). The worker reads them at startup and again every
 * `settingsInterval`: raising the concurrency starts more jobs at once without a restart,
 * and a new retention applies to the jobs finished from then on.
 */
import { Console, Context, type Duration, Effect, Latch, Layer, Ref, Schedule, Schema } from "effect"
import { Job, Jobs, JobsAdmin, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"

const ExportTable = Job.make("export-table", { args: Schema.Struct({ table: Schema.String }), queue: "exports" })

const program = Effect.gen(function*() {
  // The settings store: read by the worker, changed by the program (an operator, a flag).
  const concurrency = yield* Ref.make(1)
  const retention = yield* Ref.make<Duration.Input>("1 day")

  // Each export waits until `release` opens, so that the jobs running at once can be counted.
  const release = yield* Latch.make(false)
  let running = 0
  const ExportTableLive = Job.toLayer(ExportTable, () =>
    Effect.andThen(Effect.sync(() => running++), release.await).pipe(Effect.ensuring(Effect.sync(() => running--))))

  const context = yield* Layer.build(
    Worker.layer({
      queues: { exports: { concurrency: Ref.get(concurrency) } },
      retention: Ref.get(retention),
      settingsInterval: "200 millis"
    }).pipe(Layer.provide(ExportTableLive))
  )
  const worker = Context.get(context, Worker.Worker)
  const jobs = yield* Jobs.Jobs
  const admin = yield* JobsAdmin.JobsAdmin

  /** Waits (at most 10 s) until `n` exports run at once. */
  const runningAtOnce = (n: number) =>
    Effect.suspend(() => (running === n ? Effect.void : Effect.fail("not yet"))).pipe(
      Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 500 }),
      Effect.orDie
    )

  const ids = yield* jobs.enqueueMany(ExportTable, ["orders", "customers", "invoices", "products"].map((table) => ({ table })))
  yield* runningAtOnce(1)
  yield* Console.log(`concurrency 1: ${running} export running`)

  // Finished exports kept 10 minutes instead of a day, and three at once: read together, at the
  // worker's next read of its settings (the retention is read right after the concurrency).
  yield* Ref.set(retention, "10 minutes")
  yield* Ref.set(concurrency, 3)
  yield* runningAtOnce(3)
  const status = (yield* worker.status).find((s) => s.name === "exports")
  yield* Console.log(`concurrency set to 3 in the settings store: ${running} exports running (status: ${status?.concurrency})`)
  yield* release.open
  const keptFor = (id: string) =>
    Effect.map(admin.get(id), (job) => (job.pruneAt!.getTime() - job.finalizedAt!.getTime()) / 60_000)
  for (const id of ids) yield* jobs.await(ExportTable, id, { timeout: "10 seconds" })
  const minutes = yield* Effect.forEach(ids, keptFor)
  yield* Console.log(`retention set to 10 minutes: the exports are kept ${minutes.join(", ")} minutes`)
  yield* check(status?.concurrency === 3 && minutes.every((m) => m === 10), "settings applied at run time")
})

runMain(program.pipe(Effect.scoped, Effect.provide([Jobs.layer, JobsAdmin.layer])))
