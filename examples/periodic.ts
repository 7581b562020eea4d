/**
 * Periodic jobs: a schedule that enqueues one job per slot, here every 2 seconds
 * (a `cron` schedule works the same way). Two schedulers run, as two processes
 * would: they race for each slot in the database, and each slot still makes one job.
 */
import { Console, Context, Effect, Exit, Layer, Queue, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs, Periodic, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"

const RefreshRates = Job.make("refresh-rates", { args: Schema.Struct({ currency: Schema.String }), queue: "periodic" })
const Every2s = Periodic.make(RefreshRates, { currency: "EUR" }, { every: "2 seconds" })

const program = Effect.gen(function*() {
  // The handler tells the program about each run (which slot it was enqueued for).
  const runs = yield* Queue.unbounded<string>()
  const Handler = Job.toLayer(RefreshRates, (args, ctx) =>
    Effect.andThen(
      Console.log(`  job ${ctx.id}: refreshing ${args.currency} rates for the slot ${String(ctx.metadata.slot)}`),
      Queue.offer(runs, String(ctx.metadata.slot))
    ))
  yield* Layer.build(Worker.layer({ queues: { periodic: {} } }).pipe(Layer.provide(Handler)))

  const schedulers = yield* Scope.make()
  const first = yield* Layer.buildWithScope(Periodic.layer([Every2s]), schedulers)
  yield* Layer.buildWithScope(Periodic.layer([Every2s]), schedulers)
  for (const s of yield* Context.get(first, Periodic.Periodic).list) {
    yield* Console.log(`schedule ${s.name}: ${s.description}, next run at ${s.nextRunAt.toISOString()}`)
  }

  const slots = [yield* Queue.take(runs), yield* Queue.take(runs), yield* Queue.take(runs)]
  yield* Scope.close(schedulers, Exit.void)
  yield* Console.log("schedulers stopped")

  const sql = yield* SqlClient.SqlClient
  const perSlot = yield* sql<{ readonly slot: string; readonly jobs: number }>`
    SELECT metadata->>'slot' AS slot, count(*)::int AS jobs FROM effect_jobs.jobs
    WHERE metadata->>'periodic' = ${Every2s.name} GROUP BY 1 ORDER BY 1`
  const gaps = slots.slice(1).map((s, i) => Date.parse(s) - Date.parse(slots[i]!))
  yield* Console.log(`${slots.length} slots, ${gaps.join(" and ")} ms apart; jobs per slot: ${perSlot.map((r) => r.jobs).join(", ")}`)
  yield* check(gaps.every((g) => g === 2000) && perSlot.every((r) => r.jobs === 1), "one job per slot, every 2 seconds")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
