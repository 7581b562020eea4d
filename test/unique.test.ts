/**
 * Uniqueness, debounce and throttle (docs/enqueue.md "Uniqueness", docs/flow-control.md):
 * `insert*` telling inserted / duplicate / replaced apart, across pools; unique windows by
 * period and the states that hold a key (migration 0010), on a TestClock; `replace` of a
 * waiting job (debounce), and of a running one (not touched); bad options refused, nothing
 * written.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Layer, Option, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { InvalidJobOptions, Job, Jobs, JobsAdmin, Testing } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { countByName, makeProbe, row, startOfNextSecond, withTestClock } from "./support/probes.ts"

const Args = Schema.Struct({ n: Schema.Number })
const Basic = Job.make("u-basic", { args: Args, queue: "u-basic" })
const Race = Job.make("u-race", { args: Args, queue: "u-race" })
const Window = Job.make("u-window", { args: Args, queue: "u-window", retention: "1 day" })
const Ever = Job.make("u-ever", { args: Args, queue: "u-ever", retention: "1 day", maxAttempts: 1 })
const Redrive = Job.make("u-redrive", { args: Args, queue: "u-redrive", retention: "1 day", maxAttempts: 1 })
const Debounced = Job.make("u-debounce", { args: Args, queue: "u-debounce", retention: "1 day" })
const Busy = Job.make("u-busy", { args: Args, queue: "u-busy", retention: "1 day" })
const Bad = Job.make("u-bad", { args: Args, queue: "u-bad" })

const FileLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer).pipe(Layer.provideMerge(TestDb.layer()))

const minutes = (n: number) => n * 60_000

/** A `Jobs` client on a pool of its own: another process, as far as the database can tell. */
const otherClient = Effect.map(
  Layer.build(Jobs.layer.pipe(Layer.provide(Layer.fresh(TestDb.pool({ maxConnections: 10 }))))),
  (context) => Context.get(context, Jobs.Jobs)
)

/** The uniqueness columns of a job's row. */
const uniqueColumns = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly unique_states: ReadonlyArray<string> | null; readonly unique_window: string | null }>`
        SELECT unique_states, unique_window::text FROM effect_jobs.jobs WHERE id = ${id}::bigint`,
      (rows) => rows[0]!
    )).pipe(Effect.orDie)

const keyCount = (name: string, key: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE name = ${name} AND unique_key = ${key}`,
      (rows) => rows[0]!.n
    )).pipe(Effect.orDie)

const tally = (results: ReadonlyArray<Jobs.EnqueueResult>) => {
  const counts: Record<string, number> = {}
  for (const r of results) counts[r.outcome] = (counts[r.outcome] ?? 0) + 1
  return counts
}

layer(FileLayer, { excludeTestServices: true })("uniqueness", (it) => {
  it.effect("insert says inserted or duplicate; enqueue still returns the id; every form; nothing new for other jobs", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const first = yield* jobs.insert(Basic, { n: 1 }, { uniqueKey: "k1" })
      assert.strictEqual(first.outcome, "inserted")
      assert.deepStrictEqual(yield* jobs.insert(Basic, { n: 2 }, { uniqueKey: "k1" }), { id: first.id, outcome: "duplicate" })
      assert.strictEqual(yield* jobs.enqueue(Basic, { n: 3 }, { uniqueKey: "k1" }), first.id)
      assert.deepStrictEqual((yield* row(first.id)).args, { n: 1 }, "the first one's args are kept")

      const many = yield* jobs.insertMany(Basic, [{ n: 4 }, { n: 5 }, { n: 6 }], { uniqueKey: "k2" })
      assert.deepStrictEqual(many.map((r) => r.outcome), ["inserted", "duplicate", "duplicate"])
      assert.strictEqual(new Set(many.map((r) => r.id)).size, 1)

      const all = yield* jobs.insertAll([
        Jobs.entry(Basic, { n: 7 }),
        Jobs.entry(Basic, { n: 8 }, { uniqueKey: "k1" }),
        Jobs.entry(Basic, { n: 9 }, { uniqueKey: "k3" }),
        Jobs.entry(Basic, { n: 10 }),
        Jobs.entry(Basic, { n: 11 }, { uniqueKey: "k3" })
      ])
      assert.deepStrictEqual(all.map((r) => r.outcome), ["inserted", "duplicate", "inserted", "inserted", "duplicate"])
      assert.strictEqual(all[1]!.id, first.id)
      assert.strictEqual(all[4]!.id, all[2]!.id)
      assert.strictEqual(new Set([all[0]!.id, all[2]!.id, all[3]!.id]).size, 3)
      assert.deepStrictEqual((yield* row(all[3]!.id)).args, { n: 10 }, "jobs without a key get their own ids, in order")
      // a plain batch (one statement for the args) says inserted for each
      const plain = yield* jobs.insertMany(Basic, [{ n: 12 }, { n: 13 }])
      assert.deepStrictEqual(plain.map((r) => r.outcome), ["inserted", "inserted"])

      // jobs without a window write nothing new
      for (const id of [first.id, all[0]!.id, plain[0]!.id]) {
        assert.deepStrictEqual(yield* uniqueColumns(id), { unique_states: null, unique_window: null })
      }
      assert.strictEqual(yield* keyCount("u-basic", "k1"), 1)
    }))

  it.effect("concurrent duplicates from two pools: one inserted, all others reported duplicate (or replaced)", () =>
    Effect.gen(function*() {
      const here = yield* Jobs.Jobs
      const there = yield* otherClient
      const clients = [here, there]
      const race = (key: string, options: Jobs.EnqueueOptions) =>
        Effect.forEach(
          Array.from({ length: 24 }, (_, n) => n),
          (n) => clients[n % 2]!.insert(Race, { n }, { ...options, uniqueKey: key }),
          { concurrency: 24 }
        )

      // only unfinished jobs hold the key (the index of migration 0001)
      const plain = yield* race("plain", {})
      assert.deepStrictEqual(tally(plain), { inserted: 1, duplicate: 23 })
      assert.strictEqual(new Set(plain.map((r) => r.id)).size, 1)
      assert.strictEqual(yield* keyCount("u-race", "plain"), 1)

      // with a window (the index of migration 0010 as well)
      const windowed = yield* race("windowed", { unique: { period: "1 hour" } })
      assert.deepStrictEqual(tally(windowed), { inserted: 1, duplicate: 23 })
      assert.strictEqual(new Set(windowed.map((r) => r.id)).size, 1)
      assert.strictEqual(yield* keyCount("u-race", "windowed"), 1)

      // with replace: one inserted, every other one replaced it
      const replaced = yield* race("replaced", { unique: { replace: true } })
      assert.deepStrictEqual(tally(replaced), { inserted: 1, replaced: 23 })
      assert.strictEqual(new Set(replaced.map((r) => r.id)).size, 1)
      assert.strictEqual(yield* keyCount("u-race", "replaced"), 1)
      const n = ((yield* row(replaced[0]!.id)).args as { n: number }).n
      assert.isTrue(n >= 0 && n < 24, `the args of one of the writes: ${n}`)
    }))

  it.effect("period: a completed job holds its key until its window ends, across the boundary", () => {
    // a TestClock at 10 minutes past a multiple of 10 minutes
    const t0 = Math.ceil(startOfNextSecond() / minutes(10)) * minutes(10) + minutes(10)
    return withTestClock(
      t0 + minutes(1),
      Effect.gen(function*() {
        const jobs = yield* Jobs.Jobs
        const ran: Array<number> = []
        const handlers = Job.toLayer(Window, (args) => Effect.sync(() => ran.push(args.n)))
        const tenMinutes = { uniqueKey: "report", unique: { period: "10 minutes" } } as const

        const first = yield* jobs.insert(Window, { n: 1 }, tenMinutes)
        assert.strictEqual(first.outcome, "inserted")
        assert.deepStrictEqual(yield* uniqueColumns(first.id), {
          unique_states: ["scheduled", "available", "running", "completed"],
          unique_window: (yield* windowText(t0))
        })
        yield* Testing.drain({ queues: ["u-window"] }).pipe(Effect.provide(handlers))
        assert.strictEqual((yield* row(first.id)).state, "completed")

        // completed, and still in its window: a duplicate
        yield* TestClock.setTime(t0 + minutes(5))
        assert.deepStrictEqual(yield* jobs.insert(Window, { n: 2 }, tenMinutes), { id: first.id, outcome: "duplicate" })
        yield* TestClock.setTime(t0 + minutes(10) - 1)
        assert.deepStrictEqual(yield* jobs.insert(Window, { n: 3 }, tenMinutes), { id: first.id, outcome: "duplicate" })
        // without a period, a completed job never holds the key
        const free = yield* jobs.insert(Window, { n: 4 }, { uniqueKey: "report" })
        assert.strictEqual(free.outcome, "inserted")
        yield* Testing.drain({ queues: ["u-window"] }).pipe(Effect.provide(handlers))

        // the next window: a new job
        yield* TestClock.setTime(t0 + minutes(10))
        const second = yield* jobs.insert(Window, { n: 5 }, tenMinutes)
        assert.strictEqual(second.outcome, "inserted")
        assert.strictEqual((yield* uniqueColumns(second.id)).unique_window, yield* windowText(t0 + minutes(10)))
        // a window and replace together: the waiting job takes the new args
        yield* TestClock.setTime(t0 + minutes(15))
        const replaced = yield* jobs.insert(Window, { n: 55 }, { uniqueKey: "report", unique: { period: "10 minutes", replace: true } })
        assert.deepStrictEqual(replaced, { id: second.id, outcome: "replaced" })
        assert.strictEqual((yield* uniqueColumns(second.id)).unique_window, yield* windowText(t0 + minutes(10)))
        // still unfinished when the window after that begins: it holds the key there too
        yield* TestClock.setTime(t0 + minutes(20) + 1)
        assert.deepStrictEqual(yield* jobs.insert(Window, { n: 6 }, tenMinutes), { id: second.id, outcome: "duplicate" })
        yield* Testing.drain({ queues: ["u-window"] }).pipe(Effect.provide(handlers))
        // finished in that later window, but it holds only its own (t0 + 10 min)
        const third = yield* jobs.insert(Window, { n: 7 }, tenMinutes)
        assert.strictEqual(third.outcome, "inserted")
        yield* Testing.drain({ queues: ["u-window"] }).pipe(Effect.provide(handlers))
        assert.deepStrictEqual(ran, [1, 4, 55, 7])
      })
    )
  })

  it.effect("states: completed, dead and cancelled jobs hold the key when their state is listed (no period: while kept)", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const handlers = Job.toLayer(Ever, (args) => args.n < 0 ? Job.discard("negative") : Effect.void)
      const everAfter = (key: string, states: ReadonlyArray<JobsAdmin.JobState>) =>
        ({ uniqueKey: key, unique: { states: ["scheduled", "available", "running", ...states] } }) as const

      // completed
      const done = yield* jobs.insert(Ever, { n: 1 }, everAfter("c", ["completed"]))
      assert.deepStrictEqual(yield* uniqueColumns(done.id), {
        unique_states: ["scheduled", "available", "running", "completed"],
        unique_window: "-infinity"
      })
      yield* Testing.drain({ queues: ["u-ever"] }).pipe(Effect.provide(handlers))
      assert.strictEqual((yield* row(done.id)).state, "completed")
      assert.deepStrictEqual(yield* jobs.insert(Ever, { n: 2 }, everAfter("c", ["completed"])), { id: done.id, outcome: "duplicate" })

      // dead: held with dead listed, free without
      const dead = yield* jobs.insert(Ever, { n: -1 }, everAfter("d", ["completed", "dead"]))
      const deadToo = yield* jobs.insert(Ever, { n: -1 }, everAfter("d2", ["completed"]))
      yield* Testing.drain({ queues: ["u-ever"] }).pipe(Effect.provide(handlers))
      assert.strictEqual((yield* row(dead.id)).state, "dead")
      assert.deepStrictEqual(yield* jobs.insert(Ever, { n: 3 }, everAfter("d", ["dead"])), { id: dead.id, outcome: "duplicate" })
      assert.strictEqual((yield* jobs.insert(Ever, { n: 4 }, everAfter("d2", ["completed"]))).outcome, "inserted")
      assert.strictEqual((yield* row(deadToo.id)).state, "dead")

      // cancelled (by an operator, while waiting)
      const cancelled = yield* jobs.insert(Ever, { n: 5 }, everAfter("x", ["cancelled"]))
      assert.strictEqual(yield* admin.cancel(cancelled.id), "cancelled")
      assert.deepStrictEqual(yield* jobs.insert(Ever, { n: 6 }, everAfter("x", ["cancelled"])), { id: cancelled.id, outcome: "duplicate" })
      // deleting the finished row frees the key
      yield* admin.delete(cancelled.id)
      assert.strictEqual((yield* jobs.insert(Ever, { n: 7 }, everAfter("x", ["cancelled"]))).outcome, "inserted")
      yield* Testing.drain({ queues: ["u-ever"] }).pipe(Effect.provide(handlers))
    }))

  it.effect("retry and retryDead leave a dead job dead while another job holds its window", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const handlers = Job.toLayer(Redrive, (args) => args.n < 0 ? Job.discard("negative") : Effect.void)
      // dead does not hold the key (only unfinished and completed do), so after a dies, b takes the key
      const opts = { uniqueKey: "w", unique: { states: ["scheduled", "available", "running", "completed"] } } as const
      const a = yield* jobs.insert(Redrive, { n: -1 }, opts)
      const other = yield* jobs.insert(Redrive, { n: -2 }) // dead too, no key: retryDead takes it
      yield* Testing.drain({ queues: ["u-redrive"] }).pipe(Effect.provide(handlers))
      assert.strictEqual((yield* row(a.id)).state, "dead")
      const b = yield* jobs.insert(Redrive, { n: 1 }, opts)
      assert.strictEqual(b.outcome, "inserted")
      yield* Testing.drain({ queues: ["u-redrive"] }).pipe(Effect.provide(handlers))
      assert.strictEqual((yield* row(b.id)).state, "completed")

      const refused = yield* Effect.flip(admin.retry(a.id))
      assert.strictEqual(refused._tag, "JobNotRetryable")
      assert.strictEqual(yield* admin.retryDead("u-redrive"), 1, "only the job without a key")
      assert.strictEqual((yield* row(a.id)).state, "dead")
      assert.strictEqual((yield* row(other.id)).state, "available")
    }))

  it.effect("replace: a scheduled job takes the new args, run time, priority and metadata; the handler sees them", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const probe = yield* makeProbe
      const seen: Array<{ n: number; priority: number; metadata: unknown }> = []
      const debounce = (n: number, options: Jobs.EnqueueOptions = {}) =>
        jobs.insert(Debounced, { n }, { uniqueKey: "doc:1", unique: { replace: true }, ...options })

      const first = yield* debounce(1, { delay: "1 hour" })
      assert.strictEqual(first.outcome, "inserted")
      const before = yield* row(first.id)
      assert.strictEqual(before.state, "scheduled")

      const second = yield* debounce(2, { delay: "2 hours", priority: 3, metadata: { rev: 2 } })
      assert.deepStrictEqual(second, { id: first.id, outcome: "replaced" })
      const after = yield* row(first.id)
      assert.deepStrictEqual(after.args, { n: 2 })
      assert.strictEqual(after.state, "scheduled")
      assert.strictEqual(after.priority, 3)
      assert.deepStrictEqual(after.metadata, { rev: 2 })
      assert.isAtLeast(after.run_at.getTime() - before.run_at.getTime(), minutes(60) - 1000, "the run moved to the last write's time")
      assert.strictEqual(after.created_at.getTime(), before.created_at.getTime())

      // keepRunAt: the args change, the run time stays
      const third = yield* debounce(3, { delay: "5 minutes", unique: { replace: "keepRunAt" } })
      assert.deepStrictEqual(third, { id: first.id, outcome: "replaced" })
      assert.deepStrictEqual((yield* row(first.id)).args, { n: 3 })
      assert.strictEqual((yield* row(first.id)).run_at.getTime(), after.run_at.getTime())

      // A worker that polls (and promotes) once an hour: a job a replace makes due now is run
      // at once, woken by the replace's NOTIFY (as test/wake-on-retry.test.ts checks for retries).
      yield* startWorker(
        { queues: { "u-debounce": { pollInterval: "1 hour" } }, maintenanceInterval: "1 hour", pruner: false },
        Layer.mergeAll(
          Job.toLayer(Debounced, (args, ctx) => Effect.sync(() => seen.push({ n: args.n, priority: ctx.priority, metadata: ctx.metadata }))),
          probe.layer
        )
      )
      // Listening and sated once it has run a job enqueued after it started.
      const warmup = yield* jobs.enqueue(Debounced, { n: 100 })
      assert.strictEqual((yield* probe.next(warmup))._tag, "completed")
      const fourth = yield* debounce(4, { metadata: { rev: 4 } })
      assert.deepStrictEqual(fourth, { id: first.id, outcome: "replaced" })
      const ran = yield* probe.next(first.id).pipe(Effect.timeoutOption("5 seconds"))
      assert.isTrue(Option.isSome(ran) && ran.value._tag === "completed", "run within 5 s of the replace, not at the next poll")
      assert.deepStrictEqual(seen, [{ n: 100, priority: 0, metadata: {} }, { n: 4, priority: 0, metadata: { rev: 4 } }])
      assert.strictEqual(yield* keyCount("u-debounce", "doc:1"), 1)

      // within one batch, the last write wins too
      const batch = yield* jobs.insertMany(Debounced, [{ n: 5 }, { n: 6 }, { n: 7 }], {
        uniqueKey: "doc:2",
        delay: "1 hour",
        unique: { replace: true }
      })
      assert.deepStrictEqual(batch.map((r) => r.outcome), ["inserted", "replaced", "replaced"])
      assert.deepStrictEqual((yield* row(batch[0]!.id)).args, { n: 7 })
      const mixed = yield* jobs.insertAll([
        Jobs.entry(Debounced, { n: 8 }, { uniqueKey: "doc:2", delay: "1 hour" }),
        Jobs.entry(Debounced, { n: 9 }, { uniqueKey: "doc:2", delay: "1 hour", unique: { replace: true } })
      ])
      assert.deepStrictEqual(mixed, [{ id: batch[0]!.id, outcome: "duplicate" }, { id: batch[0]!.id, outcome: "replaced" }])
      assert.deepStrictEqual((yield* row(batch[0]!.id)).args, { n: 9 })
    }))

  it.effect("replace with a running duplicate: the running job is not touched, the enqueue is a duplicate", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const probe = yield* makeProbe
      const started = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const seen: Array<number> = []
      const debounce = (n: number) => jobs.insert(Busy, { n }, { uniqueKey: "busy", unique: { replace: true } })
      yield* startWorker(
        { queues: { "u-busy": { pollInterval: "20 millis" } } },
        Layer.mergeAll(
          Job.toLayer(Busy, (args) =>
            Effect.gen(function*() {
              seen.push(args.n)
              if (args.n === 1) {
                yield* Deferred.succeed(started, undefined)
                yield* Deferred.await(release)
              }
            })),
          probe.layer
        )
      )
      const first = yield* debounce(1)
      yield* Deferred.await(started)
      assert.strictEqual((yield* row(first.id)).state, "running")
      assert.deepStrictEqual(yield* debounce(2), { id: first.id, outcome: "duplicate" })
      const held = yield* row(first.id)
      assert.deepStrictEqual(held.args, { n: 1 })
      assert.strictEqual(held.state, "running")
      assert.strictEqual(yield* keyCount("u-busy", "busy"), 1, "nothing inserted")
      yield* Deferred.succeed(release, undefined)
      assert.strictEqual((yield* probe.next(first.id))._tag, "completed")
      // finished: the key is free again
      const next = yield* debounce(3)
      assert.strictEqual(next.outcome, "inserted")
      assert.strictEqual((yield* probe.next(next.id))._tag, "completed")
      assert.deepStrictEqual(seen, [1, 3])
    }))

  it.effect("bad unique options -> InvalidJobOptions, nothing written (every form)", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const cases: ReadonlyArray<readonly [string, Jobs.EnqueueOptions]> = [
        ["period 0", { uniqueKey: "k", unique: { period: 0 } }],
        ["negative period", { uniqueKey: "k", unique: { period: "-5 minutes" } }],
        ["infinite period", { uniqueKey: "k", unique: { period: Infinity } }],
        ["NaN period", { uniqueKey: "k", unique: { period: Number.NaN } }],
        ["unparseable period", { uniqueKey: "k", unique: { period: "often" as never } }],
        ["period under 1 ms", { uniqueKey: "k", unique: { period: 0.5 } }],
        ["NUL in the key", { uniqueKey: "a\u0000b", unique: { period: "1 minute" } }],
        ["key over 1,000 characters", { uniqueKey: "k".repeat(1001) }],
        ["empty states", { uniqueKey: "k", unique: { states: [] } }],
        ["unknown state", { uniqueKey: "k", unique: { states: ["scheduled", "available", "running", "done" as never] } }],
        ["states without running", { uniqueKey: "k", unique: { states: ["scheduled", "available", "completed"] } }],
        ["states not an array", { uniqueKey: "k", unique: { states: "completed" as never } }],
        ["a period without a finished state", {
          uniqueKey: "k",
          unique: { period: "1 minute", states: ["scheduled", "available", "running"] }
        }],
        ["unique without a key", { unique: { period: "1 minute" } }],
        ["replace not a mode", { uniqueKey: "k", unique: { replace: "yes" as never } }],
        ["unique not an object", { uniqueKey: "k", unique: "period" as never }]
      ]
      for (const [label, options] of cases) {
        for (const attempt of [
          jobs.insert(Bad, { n: 1 }, options) as Effect.Effect<unknown, Jobs.EnqueueError>,
          jobs.enqueue(Bad, { n: 1 }, options),
          jobs.insertMany(Bad, [{ n: 1 }, { n: 2 }], options),
          jobs.insertAll([Jobs.entry(Bad, { n: 1 }), Jobs.entry(Bad, { n: 2 }, options)])
        ]) {
          const error = yield* Effect.flip(attempt)
          assert.instanceOf(error, InvalidJobOptions, label)
          assert.strictEqual(error._tag, "InvalidJobOptions", label)
          assert.strictEqual((error as InvalidJobOptions).job, "u-bad", label)
        }
        assert.strictEqual(yield* countByName("u-bad"), 0, label)
      }
      // bundles keep refusing unique members
      const bundle = yield* Effect.flip(jobs.enqueueBundle({ name: "b" }, [Jobs.entry(Bad, { n: 1 }, { unique: { replace: true } })]))
      assert.strictEqual(bundle._tag, "InvalidJobOptions")
      assert.strictEqual(yield* countByName("u-bad"), 0)
      // and a good one still goes in
      assert.strictEqual((yield* jobs.insert(Bad, { n: 1 }, { uniqueKey: "k", unique: { period: "1 minute" } })).outcome, "inserted")
    }))

  it.effect("Testing layers: insert says inserted (they do not model uniqueness), and check options the same way", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      assert.deepStrictEqual(yield* jobs.insert(Bad, { n: 1 }, { uniqueKey: "k" }), { id: "1", outcome: "inserted" })
      assert.deepStrictEqual(yield* jobs.insert(Bad, { n: 1 }, { uniqueKey: "k" }), { id: "2", outcome: "inserted" })
      const error = yield* Effect.flip(jobs.insert(Bad, { n: 1 }, { uniqueKey: "k", unique: { states: [] } }))
      assert.strictEqual(error._tag, "InvalidJobOptions")
    }).pipe(Effect.provide(Testing.layerIgnore)))
})

/** The database's text of a window start (what `unique_window::text` reads). */
const windowText = (millis: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly t: string }>`SELECT ${new Date(millis).toISOString()}::timestamptz::text AS t`,
      (rows) => rows[0]!.t
    )).pipe(Effect.orDie)
