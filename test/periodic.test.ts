/**
 * Periodic jobs: exactly one job per slot with several schedulers racing; missed
 * slots; listing; database errors at a slot and at start-up are retried (the
 * periodic table is renamed away, for real, to make them fail).
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Context, Duration, Effect, Layer, Option, Queue, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { Job, Jobs, Observer, Periodic } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { advanceUntil, startOfNextSecond, withTestClock } from "./support/probes.ts"

const Tick = Job.make("tick", { args: Schema.Struct({ source: Schema.String }), queue: "p-none" })

const slotsOf = (schedule: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly slot: string; readonly n: number }>`
      SELECT metadata->>'slot' AS slot, count(*)::int AS n FROM effect_jobs.jobs
      WHERE name = 'tick' AND metadata->>'periodic' = ${schedule} GROUP BY 1 ORDER BY 1`)

const scheduler = (schedules: ReadonlyArray<Periodic.Entry>, observer: Layer.Layer<never> = Layer.empty) =>
  Layer.build(
    Periodic.layer(schedules).pipe(
      Layer.provide(observer),
      Layer.provide(Layer.fresh(TestDb.pool({ maxConnections: 2, connectTimeout: Duration.infinity })))
    )
  )

/** An observer that hands every `workerError` ("queue: message") to the test, in order. */
const errorProbe = Effect.gen(function*() {
  const errors = yield* Queue.unbounded<string>()
  const layer: Layer.Layer<never> = Observer.add({
    ...Observer.noop,
    workerError: (queue, message) => Effect.asVoid(Queue.offer(errors, `${queue}: ${message}`))
  })
  /** The next error, moving the TestClock on in small steps until one comes. */
  const next = (limit: number) =>
    advanceUntil(Queue.poll(errors), { step: "50 millis", limit })
  return { errors, layer, next }
})

/** Makes every statement on the periodic table fail (42P01), or puts the table back. */
const periodicTable = (present: boolean) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    present
      ? sql`ALTER TABLE effect_jobs.periodic_away RENAME TO periodic`
      : sql`ALTER TABLE effect_jobs.periodic RENAME TO periodic_away`)

const iso = (millis: number) => new Date(millis).toISOString()
const some = <A>(rows: ReadonlyArray<A>, n: number) => (rows.length >= n ? Option.some(rows) : Option.none())

/** Waits until the schedules of a scheduler built with `scheduler` are registered. */
const ready = (ctx: Context.Context<Periodic.Periodic>) =>
  Effect.provideContext(Effect.flatMap(Periodic.Periodic, (p) => p.ready), ctx)

layer(Jobs.layer.pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })("periodic", (it) => {
  it.effect("three schedulers racing: each cron slot produces exactly one job", () => {
    const start = Math.ceil(startOfNextSecond() / 300_000) * 300_000 + 1_000 // just after a 5-minute slot
    return withTestClock(
      start,
      Effect.gen(function*() {
        const schedule = Periodic.make(Tick, { source: "cron" }, { name: "race", cron: "*/5 * * * *", timeZone: "Europe/Paris" })
        const slots = [1, 2, 3, 4, 5, 6].map((k) => start - 1_000 + k * 300_000)
        yield* Effect.scoped(Effect.gen(function*() {
          for (let i = 0; i < 3; i++) yield* ready(yield* scheduler([schedule]))
          // The clock stops at each slot until its job is there: a scheduler slower than the
          // test (its SQL is real) may fall behind, but no slot can be skipped.
          for (const slot of slots) {
            yield* advanceUntil(
              Effect.map(slotsOf("race"), (rows) => (rows.some((r) => r.slot === iso(slot)) ? Option.some(rows) : Option.none())),
              { step: "1 minute", limit: slot }
            )
          }
        }))
        // Every scheduler is stopped (an unfinished transaction of a loser rolled back): what is
        // committed now is final.
        assert.deepStrictEqual(yield* slotsOf("race"), slots.map((slot) => ({ slot: iso(slot), n: 1 })))
      })
    )
  }, { timeout: 60_000 })

  it.effect("three schedulers registering a new schedule at the same moment: no error, round after round, one job per slot", () => {
    const start = Math.ceil(startOfNextSecond() / 60_000) * 60_000 + 500
    return withTestClock(
      start,
      Effect.gen(function*() {
        const probe = yield* errorProbe
        for (let round = 0; round < 10; round++) {
          const name = `first-${round}`
          const schedule = Periodic.make(Tick, { source: name }, { name, every: "1 minute" })
          const now = yield* Clock.currentTimeMillis
          const slot = (Math.floor(now / 60_000) + 1) * 60_000
          yield* Effect.scoped(Effect.gen(function*() {
            // Three "processes", each with a connection already open, so their registrations
            // (the first statement each sends) reach the server together.
            const pools = yield* Effect.forEach([1, 2, 3], () =>
              Effect.tap(
                Layer.build(Layer.fresh(TestDb.pool({ maxConnections: 2, connectTimeout: Duration.infinity }))),
                (ctx) => Effect.provideContext(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT 1`), ctx)
              ))
            const schedulers = yield* Effect.forEach(
              pools,
              (ctx) => Layer.build(Periodic.layer([schedule]).pipe(Layer.provide(probe.layer), Layer.provide(Layer.succeedContext(ctx)))),
              { concurrency: "unbounded" }
            )
            // Registered everywhere, or the first error (a failed registration restarts the scheduler
            // after a pause on the TestClock, which does not move here).
            yield* Effect.raceFirst(
              Effect.forEach(schedulers, ready, { concurrency: "unbounded", discard: true }),
              Effect.flatMap(Queue.take(probe.errors), (e) => Effect.die(new Error(`round ${round}: ${e}`)))
            )
            const rows = yield* advanceUntil(Effect.map(slotsOf(name), (r) => some(r, 1)), { step: "5 seconds", limit: slot })
            assert.deepStrictEqual(rows, [{ slot: iso(slot), n: 1 }], `round ${round}`)
          }))
          // The schedulers are stopped: what is committed is final.
          assert.deepStrictEqual(yield* slotsOf(name), [{ slot: iso(slot), n: 1 }], `round ${round}: one job, for its slot`)
          assert.deepStrictEqual(yield* Queue.clear(probe.errors), [], `round ${round}: no error reported`)
        }
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
        yield* Effect.scoped(Effect.flatMap(scheduler([skip, last]), ready))
        yield* TestClock.setTime(start + 3_600_000)
        yield* ready(yield* scheduler([skip, last]))
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

  it.effect("a slot whose enqueue fails is retried with backoff until it goes through: one job, errors reported", () => {
    const start = Math.ceil(startOfNextSecond() / 60_000) * 60_000 + 500
    const slot = start - 500 + 60_000
    return withTestClock(
      start,
      Effect.gen(function*() {
        const probe = yield* errorProbe
        const schedule = Periodic.make(Tick, { source: "retry" }, { name: "retry", every: "1 minute", options: { queue: "p-retry" } })
        yield* ready(yield* scheduler([schedule], probe.layer))
        yield* periodicTable(false)
        // the slot comes while the table is away: the enqueue fails, and is tried again and again
        yield* TestClock.adjust(slot - start)
        const first = yield* Queue.take(probe.errors)
        assert.strictEqual(first, `p-retry: periodic schedule "retry": enqueueing the slot of ${iso(slot)} failed`)
        assert.strictEqual(yield* probe.next(slot + 10_000), first)
        assert.strictEqual(yield* probe.next(slot + 10_000), first)
        yield* periodicTable(true)
        const rows = yield* advanceUntil(Effect.map(slotsOf("retry"), (r) => some(r, 1)), { step: "100 millis", limit: slot + 59_000 })
        assert.deepStrictEqual(rows, [{ slot: iso(slot), n: 1 }])
        // and the scheduler goes on: the next slot, once
        const both = yield* advanceUntil(Effect.map(slotsOf("retry"), (r) => some(r, 2)), { step: "1 second", limit: slot + 61_000 })
        assert.deepStrictEqual(both, [{ slot: iso(slot), n: 1 }, { slot: iso(slot + 60_000), n: 1 }])
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ readonly last_slot: Date; readonly jobs: number }>`
          SELECT p.last_slot, (SELECT count(*)::int FROM effect_jobs.jobs j WHERE j.id = p.last_job
                                 AND j.metadata->>'slot' = ${iso(slot + 60_000)}) AS jobs
          FROM effect_jobs.periodic p WHERE name = 'retry'`
        assert.strictEqual(row?.last_slot.getTime(), slot + 60_000)
        assert.strictEqual(row?.jobs, 1, "last_job is the job of the last slot")
      })
    )
  }, { timeout: 30_000 })

  it.effect("a slot still failing when the next one is due is given up (reported); the next one is enqueued once", () => {
    const start = Math.ceil(startOfNextSecond() / 10_000) * 10_000 + 500
    const slot = start - 500 + 10_000
    return withTestClock(
      start,
      Effect.gen(function*() {
        const probe = yield* errorProbe
        const schedule = Periodic.make(Tick, { source: "give-up" }, { name: "give-up", every: "10 seconds", options: { queue: "p-give-up" } })
        yield* ready(yield* scheduler([schedule], probe.layer))
        yield* periodicTable(false)
        const lost = `p-give-up: periodic schedule "give-up": the slot of ${iso(slot)} was not enqueued (the next slot is due)`
        const seen: Array<string> = []
        while (seen.at(-1) !== lost) seen.push(yield* probe.next(slot + 10_000))
        // every attempt at the slot was made before the next slot was due
        assert.isAbove(seen.length, 3)
        for (const e of seen.slice(0, -1)) assert.match(e, new RegExp(`enqueueing the slot of ${iso(slot)} failed$`))
        // the next slot is due: fired at once, failing too until the table is back
        const next = yield* probe.next(slot + 10_000)
        assert.strictEqual(next, `p-give-up: periodic schedule "give-up": enqueueing the slot of ${iso(slot + 10_000)} failed`)
        yield* periodicTable(true)
        const rows = yield* advanceUntil(Effect.map(slotsOf("give-up"), (r) => some(r, 1)), { step: "100 millis", limit: slot + 19_000 })
        assert.deepStrictEqual(rows, [{ slot: iso(slot + 10_000), n: 1 }])
      })
    )
  }, { timeout: 30_000 })

  it.effect("start-up with the database failing: the layer builds, registration is retried, the slot due meanwhile is enqueued once", () => {
    const start = Math.ceil(startOfNextSecond() / 60_000) * 60_000 + 500
    const slot = start - 500 + 60_000
    return withTestClock(
      start,
      Effect.gen(function*() {
        const probe = yield* errorProbe
        const schedule = Periodic.make(Tick, { source: "startup" }, { name: "startup", every: "1 minute", options: { queue: "p-startup" } })
        yield* periodicTable(false)
        const ctx = yield* scheduler([schedule], probe.layer) // does not wait for the database, nor fail
        const list = yield* Effect.provideContext(Effect.flatMap(Periodic.Periodic, (p) => p.list), ctx)
        assert.deepStrictEqual(list.map((s) => [s.name, s.nextRunAt.getTime()]), [["startup", slot]])
        assert.strictEqual(yield* Queue.take(probe.errors), `p-startup: periodic schedule "startup": registering the schedule failed`)
        // still away when the first slot comes (registration is retried: 200 ms, 400 ms, ... 30 s apart)
        yield* advanceUntil(Effect.map(Clock.currentTimeMillis, (now) => (now > slot ? Option.some(now) : Option.none())), {
          step: "1 second"
        })
        assert.isAtLeast((yield* Queue.takeAll(probe.errors)).length, 3, "each failed attempt is reported")
        yield* periodicTable(true)
        yield* advanceUntil(Effect.map(slotsOf("startup"), (r) => some(r, 1)), { step: "1 second", limit: slot + 59_000 })
        yield* ready(ctx)
        const both = yield* advanceUntil(Effect.map(slotsOf("startup"), (r) => some(r, 2)), { step: "1 second", limit: slot + 61_000 })
        // the slot before start-up was missed ("skip"); the one that came due while the database was away was not
        assert.deepStrictEqual(both, [{ slot: iso(slot), n: 1 }, { slot: iso(slot + 60_000), n: 1 }])
      })
    )
  }, { timeout: 30_000 })

  // 03:00 in Paris is 02:00 UTC in winter (CET) and 01:00 UTC in summer (CEST). Summer time
  // starts on 2026-03-29 (at 01:00 UTC, 02:00 CET becomes 03:00 CEST) and ends on 2026-10-25
  // (at 01:00 UTC, 03:00 CEST becomes 02:00 CET): the daily slot moves by an hour across each.
  for (
    const [name, start, before, after] of [
      ["paris-spring", "2026-03-27T12:00:00.000Z", "2026-03-28T02:00:00.000Z", "2026-03-29T01:00:00.000Z"],
      ["paris-autumn", "2026-10-23T12:00:00.000Z", "2026-10-24T01:00:00.000Z", "2026-10-25T02:00:00.000Z"]
    ] as const
  ) {
    it.effect(`cron "0 3 * * *" in Europe/Paris across a DST change (${name}): listed and enqueued at ${before} then ${after}`, () =>
      withTestClock(
        Date.parse(start),
        Effect.gen(function*() {
          const schedule = Periodic.make(Tick, { source: name }, { name, cron: "0 3 * * *", timeZone: "Europe/Paris" })
          const nextRun = (ctx: Context.Context<Periodic.Periodic>) =>
            Effect.provideContext(Effect.flatMap(Periodic.Periodic, (p) => p.list), ctx).pipe(
              Effect.map((list) => list.map((s) => [s.name, s.nextRunAt.toISOString()]))
            )
          yield* Effect.scoped(Effect.gen(function*() {
            const ctx = yield* scheduler([schedule])
            yield* ready(ctx)
            assert.deepStrictEqual(yield* nextRun(ctx), [[name, before]])
            // The clock stops at each slot until its job is there (the slot's time is fixed: a safe limit).
            const first = yield* advanceUntil(Effect.map(slotsOf(name), (r) => some(r, 1)), { step: "1 hour", limit: Date.parse(before) })
            assert.deepStrictEqual(first, [{ slot: before, n: 1 }])
            assert.deepStrictEqual(yield* nextRun(ctx), [[name, after]], "the next 03:00 in Paris, across the change")
            const both = yield* advanceUntil(Effect.map(slotsOf(name), (r) => some(r, 2)), { step: "1 hour", limit: Date.parse(after) })
            assert.deepStrictEqual(both, [{ slot: before, n: 1 }, { slot: after, n: 1 }])
            assert.strictEqual(yield* Clock.currentTimeMillis, Date.parse(after), "enqueued when the slot came, not before")
          }))
          // The scheduler is stopped: what is committed now is final. One job per slot, each
          // created for its own slot (its metadata) and due at once when it was enqueued.
          const sql = yield* SqlClient.SqlClient
          const jobs = yield* sql<{ readonly slot: string; readonly source: string; readonly run_at: Date }>`
            SELECT metadata->>'slot' AS slot, args->>'source' AS source, run_at FROM effect_jobs.jobs
            WHERE name = 'tick' AND metadata->>'periodic' = ${name} ORDER BY id`
          assert.deepStrictEqual(
            jobs.map((j) => [j.slot, j.source, j.run_at.toISOString()]),
            [[before, name, before], [after, name, after]]
          )
        })
      ), { timeout: 10_000 })
  }

  it.effect("retrySchedule: exponential from 200 ms, jittered, capped at 30 seconds", () =>
    Effect.gen(function*() {
      const step = yield* Schedule.toStep(Periodic.retrySchedule)
      const delays: Array<number> = []
      for (let i = 0; i < 14; i++) delays.push(Duration.toMillis((yield* step(0, undefined))[1]))
      for (let i = 0; i < 6; i++) {
        const base = 200 * 2 ** i
        assert.isAtLeast(delays[i]!, base * 0.8, `delay ${i}`)
        assert.isAtMost(delays[i]!, base * 1.2, `delay ${i}`)
      }
      for (const d of delays) assert.isAtMost(d, 30_000)
      assert.deepStrictEqual(delays.slice(9), [30_000, 30_000, 30_000, 30_000, 30_000])
    }))

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
      // args the job's Schema refuses, or enqueue options out of range, would fail every slot
      const badArgs = yield* Effect.flip(Effect.scoped(scheduler([Periodic.make(Tick, { source: 5 } as never, { name: "y", every: "1 minute" })])))
      assert.strictEqual(badArgs._tag, "InvalidSchedule")
      assert.match(badArgs.message, /^cannot enqueue its job: /)
      const badOptions = yield* Effect.flip(
        Effect.scoped(scheduler([Periodic.make(Tick, { source: "z" }, { name: "z", every: "1 minute", options: { priority: 0.5 } })]))
      )
      assert.match(badOptions.message, /^cannot enqueue its job: priority must be an integer/)
    }).pipe(Effect.provide(TestClock.layer())))
})
