/** Periodic jobs: exactly one job per slot with several schedulers racing; missed slots; listing. */
import { assert, layer } from "@effect/vitest"
import { Duration, Effect, Layer, Option, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { Job, Jobs, Periodic } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { advanceUntil, startOfNextSecond, withTestClock } from "./support/probes.ts"

const Tick = Job.make("tick", { args: Schema.Struct({ source: Schema.String }), queue: "p-none" })

const slotsOf = (schedule: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly slot: string; readonly n: number }>`
      SELECT metadata->>'slot' AS slot, count(*)::int AS n FROM effect_jobs
      WHERE name = 'tick' AND metadata->>'periodic' = ${schedule} GROUP BY 1 ORDER BY 1`)

const scheduler = (schedules: ReadonlyArray<Periodic.Schedule>) =>
  Layer.build(Periodic.layer(schedules).pipe(Layer.provide(Layer.fresh(TestDb.pool({ maxConnections: 2, connectTimeout: Duration.infinity })))))

layer(Jobs.layer.pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })("periodic", (it) => {
  it.effect("three schedulers racing: each cron slot produces exactly one job", () => {
    const start = Math.ceil(startOfNextSecond() / 300_000) * 300_000 + 1_000 // just after a 5-minute slot
    return withTestClock(
      start,
      Effect.gen(function*() {
        const schedule = Periodic.make(Tick, { source: "cron" }, { name: "race", cron: "*/5 * * * *", timeZone: "Europe/Paris" })
        for (let i = 0; i < 3; i++) yield* scheduler([schedule])
        const slots = yield* advanceUntil(
          Effect.map(slotsOf("race"), (rows) => (rows.length >= 6 ? Option.some(rows) : Option.none())),
          { step: "1 minute", limit: start + 30 * 60_000 }
        )
        // let every scheduler finish racing for the last slot, then look again
        yield* TestClock.adjust("1 minute")
        yield* TestClock.withLive(Effect.sleep("50 millis"))
        const after = yield* slotsOf("race")
        assert.deepStrictEqual(after, slots)
        assert.strictEqual(after.length, 6)
        for (const row of after) assert.strictEqual(row.n, 1, `slot ${row.slot} enqueued once`)
        assert.deepStrictEqual(
          after.map((r) => new Date(r.slot).getTime()),
          [1, 2, 3, 4, 5, 6].map((k) => start - 1_000 + k * 300_000)
        )
      })
    )
  }, { timeout: 60_000 })

  it.effect("missed slots: skip resumes with the next slot; enqueue-last enqueues the latest missed one once", () => {
    const start = Math.ceil(startOfNextSecond() / 60_000) * 60_000 + 500
    return withTestClock(
      start,
      Effect.gen(function*() {
        const skip = Periodic.make(Tick, { source: "skip" }, { name: "skip", every: "1 minute" })
        const last = Periodic.make(Tick, { source: "last" }, { name: "last", every: "1 minute", missed: "enqueue-last" })
        // first run registers both schedules; then everything is down for an hour
        yield* Effect.scoped(scheduler([skip, last]))
        yield* TestClock.setTime(start + 3_600_000)
        yield* scheduler([skip, last])
        const lastSlots = yield* advanceUntil(
          Effect.map(slotsOf("last"), (rows) => (rows.length >= 1 ? Option.some(rows) : Option.none())),
          { step: "1 second", limit: start + 3_600_000 + 1_000 }
        )
        assert.deepStrictEqual(lastSlots.map((r) => new Date(r.slot).getTime()), [start - 500 + 3_600_000])
        assert.lengthOf(yield* slotsOf("skip"), 0, "skip enqueues nothing for the missed hour")
        const next = yield* advanceUntil(
          Effect.map(slotsOf("skip"), (rows) => (rows.length >= 1 ? Option.some(rows) : Option.none())),
          { step: "10 seconds", limit: start + 3_600_000 + 61_000 }
        )
        assert.deepStrictEqual(next.map((r) => new Date(r.slot).getTime()), [start - 500 + 3_660_000])
      })
    )
  }, { timeout: 60_000 })

  it.effect("lists declared schedules with their next run time; rejects invalid ones", () =>
    Effect.gen(function*() {
      const now = Date.parse("2026-03-01T10:02:00Z")
      yield* TestClock.setTime(now)
      const ctx = yield* scheduler([
        Periodic.make(Tick, { source: "a" }, { name: "list-a", cron: "0 3 * * *", timeZone: "UTC" }),
        Periodic.make(Tick, { source: "b" }, { name: "list-b", every: "15 minutes" })
      ])
      const list = yield* Effect.provideContext(Effect.flatMap(Periodic.Periodic, (p) => p.list), ctx)
      assert.deepStrictEqual(list.map((s) => [s.name, s.nextRunAt.toISOString()]), [
        ["list-a", "2026-03-02T03:00:00.000Z"],
        ["list-b", "2026-03-01T10:15:00.000Z"]
      ])
      const invalid: ReadonlyArray<Periodic.Spec> = [
        { name: "x", cron: "not a cron" },
        { name: "x", cron: "* * * * *", timeZone: "Mars/Olympus" },
        { name: "x", every: "-5 minutes" },
        { name: "x" },
        { name: "", every: "1 minute" }
      ]
      for (const bad of invalid) {
        const error = yield* Effect.flip(Effect.scoped(scheduler([Periodic.make(Tick, { source: "bad" }, bad)])))
        assert.strictEqual(error._tag, "InvalidSchedule", JSON.stringify(bad))
      }
    }).pipe(Effect.provide(TestClock.layer())))
})
