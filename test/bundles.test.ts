/**
 * Bundles: atomic enqueue, progress, exactly-once finish and follow-up across
 * workers; the finisher's poll interval (a Duration.Input, validated).
 */
import { assert, layer } from "@effect/vitest"
import { Deferred, Duration, Effect, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Bundle, Job, Jobs, Observer } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"

const Part = Job.make("part", {
  args: Schema.Struct({ n: Schema.Number }),
  success: Schema.Struct({ doubled: Schema.Number }),
  queue: "b-parts",
  maxAttempts: 1,
  retention: 0 // bundle members are kept anyway until the bundle finished
})
const Other = Job.make("other-part", { args: Schema.Struct({ fail: Schema.Boolean }), queue: "b-parts", maxAttempts: 1 })
const Report = Job.make("report", { args: Schema.Struct({ sum: Schema.Number, failed: Schema.Number }), queue: "b-reports" })
const Batch = Bundle.make("batch")

const handlers = Layer.mergeAll(
  Job.toLayer(Part, ({ n }) => Effect.succeed({ doubled: n * 2 })),
  Job.toLayer(Other, ({ fail }) => (fail ? Effect.fail("boom") : Effect.void))
)

/** Sum of the parts' results; how many members did not complete. */
const finisher = Bundle.toLayer(Batch, (finished) =>
  Effect.succeed(Jobs.entry(Report, {
    sum: finished.members.reduce(
      (sum, m) => sum + (m.name === "part" && m.state === "completed" ? (m.result as { doubled: number }).doubled : 0),
      0
    ),
    failed: finished.members.filter((m) => m.state !== "completed").length
  })))

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

layer(TestLayer, { excludeTestServices: true })("bundles", (it) => {
  it.effect("a bundle of two kinds finishes once, with progress, a follow-up computed from the outcomes, and one event", () =>
    Effect.gen(function*() {
      const finishedEvents: Array<Observer.BundleInfo> = []
      const done = yield* Deferred.make<Observer.BundleInfo>()
      const observer = Observer.add({
        ...Observer.noop,
        bundleFinished: (b) => Effect.andThen(Effect.sync(() => finishedEvents.push(b)), Deferred.succeed(done, b))
      })
      const jobs = yield* Jobs
      const { bundleId, ids } = yield* jobs.enqueueBundle(Batch, [
        Jobs.entry(Part, { n: 1 }),
        Jobs.entry(Part, { n: 2 }),
        Jobs.entry(Part, { n: 3 }),
        Jobs.entry(Other, { fail: true })
      ], { metadata: { customer: "acme" } })
      assert.lengthOf(ids, 4)
      const before = yield* jobs.bundleProgress(bundleId)
      assert.deepStrictEqual([before.total, before.remaining, before.finished, before.counts], [4, 4, false, { available: 4 }])

      // finishers on two "processes"; workers on two more
      for (let i = 0; i < 2; i++) {
        yield* Layer.build(finisher.pipe(Layer.provide([observer, Layer.fresh(TestDb.pool({ maxConnections: 3 }))])))
        yield* startWorker({ queues: { "b-parts": { concurrency: 2 } } }, Layer.merge(handlers, Layer.fresh(TestDb.pool())))
      }
      const info = yield* Deferred.await(done)
      assert.deepStrictEqual(info.counts, { completed: 3, dead: 1 })
      const after = yield* jobs.bundleProgress(bundleId)
      assert.isTrue(after.finished)
      assert.strictEqual(after.remaining, 0)
      assert.strictEqual(after.followUpId, info.followUpId)
      const sql = yield* SqlClient.SqlClient
      const reports = yield* sql<{ args: { sum: number; failed: number } }>`SELECT args FROM effect_jobs WHERE name = 'report'`
      if (reports.length !== 1) console.log(yield* sql`SELECT id, name, state, bundle_id, created_at, request_id, metadata FROM effect_jobs ORDER BY id`, yield* sql`SELECT * FROM effect_jobs_bundles`)
      assert.deepStrictEqual(reports.map((r) => r.args), [{ sum: 12, failed: 1 }])
      assert.lengthOf(finishedEvents, 1)
    }))

  it.effect("under concurrency, 40 bundles each finish exactly once (3 workers, 3 finishers)", () =>
    Effect.gen(function*() {
      const events = new Map<string, number>()
      const all = yield* Deferred.make<void>()
      const total = 40
      const observer = Observer.add({
        ...Observer.noop,
        bundleFinished: (b) =>
          Effect.suspend(() => {
            events.set(b.id, (events.get(b.id) ?? 0) + 1)
            return events.size === total ? Deferred.succeed(all, undefined) : Effect.void
          })
      })
      for (let i = 0; i < 3; i++) {
        yield* Layer.build(finisher.pipe(Layer.provide([observer, Layer.fresh(TestDb.pool({ maxConnections: 3 }))])))
        yield* startWorker({ queues: { "b-parts": { concurrency: 4, prefetch: 0 } } }, Layer.merge(handlers, Layer.fresh(TestDb.pool())))
      }
      const jobs = yield* Jobs
      const bundles = yield* Effect.forEach(
        Array.from({ length: total }, (_, b) => b),
        (b) => jobs.enqueueBundle(Batch, Array.from({ length: 5 }, (_, n) => Jobs.entry(Part, { n: b * 10 + n }))),
        { concurrency: 4 }
      )
      yield* Deferred.await(all)
      const sql = yield* SqlClient.SqlClient
      const followUps = yield* sql<{ bundle: string; n: number }>`
        SELECT b.id::text AS bundle, count(j.id)::int AS n FROM effect_jobs_bundles b
        JOIN effect_jobs j ON j.id = b.follow_up_id GROUP BY b.id`
      for (const { bundleId } of bundles) {
        assert.strictEqual(events.get(bundleId), 1, `bundle ${bundleId}: one event`)
        const progress = yield* jobs.bundleProgress(bundleId)
        assert.isTrue(progress.finished)
      }
      assert.strictEqual(followUps.filter((f) => bundles.some((b) => b.bundleId === f.bundle)).length, total)
      const reports = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM effect_jobs WHERE name = 'report'`
      assert.strictEqual(reports[0]!.n, total + 1, "one follow-up per bundle (+1 from the first test)")
    }), { timeout: 60_000 })

  it.effect("a bundle whose onFinish fails is retried alone and does not hold back the others", () =>
    Effect.gen(function*() {
      const Picky = Bundle.make("picky")
      const finishedIds: Array<string> = []
      const done = yield* Deferred.make<void>()
      const jobs = yield* Jobs
      const bad = yield* jobs.enqueueBundle(Picky, [Jobs.entry(Part, { n: 1 })], { metadata: { fail: true } })
      const good = yield* jobs.enqueueBundle(Picky, [Jobs.entry(Part, { n: 2 })], { metadata: { fail: false } })
      yield* Layer.build(
        Bundle.toLayer(Picky, (finished) =>
          (finished.metadata as { fail: boolean }).fail
            ? Effect.fail("onFinish bug")
            : Effect.succeed(undefined)).pipe(
              Layer.provide([
                Observer.add({
                  ...Observer.noop,
                  bundleFinished: (b) =>
                    Effect.andThen(Effect.sync(() => finishedIds.push(b.id)), Deferred.succeed(done, undefined))
                }),
                Layer.fresh(TestDb.pool({ maxConnections: 3 }))
              ])
            )
      )
      yield* startWorker({ queues: { "b-parts": { concurrency: 2 } } }, Layer.merge(handlers, Layer.fresh(TestDb.pool())))
      yield* Deferred.await(done)
      assert.deepStrictEqual(finishedIds, [good.bundleId])
      const badProgress = yield* jobs.bundleProgress(bad.bundleId)
      assert.strictEqual(badProgress.remaining, 0)
      assert.isUndefined(badProgress.followUpId)
      const e = yield* Effect.flip(jobs.bundleProgress("not-a-number"))
      assert.strictEqual(e._tag, "JobNotFound")
    }))

  it.effect("pollInterval: a Duration.Input; one that is not a finite, positive duration fails the layer (InvalidWorkerConfig)", () =>
    Effect.gen(function*() {
      const build = (pollInterval: Duration.Input, observer: Layer.Layer<never> = Layer.empty) =>
        Layer.build(
          Bundle.toLayer(Bundle.make("polled"), undefined, { pollInterval }).pipe(
            Layer.provide([observer, Layer.fresh(TestDb.pool({ maxConnections: 3 }))])
          )
        )
      const bad: ReadonlyArray<Duration.Input> = [-5, 0, Number.NaN, Infinity, "-1 second", "0 millis", Duration.infinity, "soon" as never]
      for (const pollInterval of bad) {
        const error = yield* Effect.flip(Effect.scoped(build(pollInterval)))
        assert.strictEqual(error._tag, "InvalidWorkerConfig", String(pollInterval))
        assert.match(error.message, /^Bundle\.toLayer\("polled"\): pollInterval must be a finite, positive duration, got /)
      }

      // A bundle marked finished without a NOTIFY (a missed notification) is still found: by the
      // poll, every 20 ms here (or by the listener's first look, if it comes after the update).
      const done = yield* Deferred.make<string>()
      yield* build("20 millis", Observer.add({ ...Observer.noop, bundleFinished: (b) => Deferred.succeed(done, b.id) }))
      const jobs = yield* Jobs
      const { bundleId } = yield* jobs.enqueueBundle(Bundle.make("polled"), [Jobs.entry(Part, { n: 1 }, { queue: "b-nobody" })])
      const sql = yield* SqlClient.SqlClient
      yield* sql`UPDATE effect_jobs_bundles SET remaining = 0, finished_at = now() WHERE id = ${bundleId}::bigint`
      assert.strictEqual(yield* Deferred.await(done), bundleId)
    }))

  it.effect("bad bundles are rejected and write nothing", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs
      const e1 = yield* Effect.flip(jobs.enqueueBundle(Batch, []))
      assert.strictEqual(e1._tag, "InvalidJobOptions")
      const e2 = yield* Effect.flip(jobs.enqueueBundle(Batch, [Jobs.entry(Part, { n: 1 }, { uniqueKey: "k" })]))
      assert.strictEqual(e2._tag, "InvalidJobOptions")
      const e3 = yield* Effect.flip(jobs.enqueueBundle(Batch, [Jobs.entry(Part, { n: 1 }), Jobs.entry(Part, { n: "x" } as never)]))
      assert.strictEqual(e3._tag, "InvalidJobArgs")
      const e4 = yield* Effect.flip(jobs.bundleProgress("123456789"))
      assert.strictEqual(e4._tag, "JobNotFound")
    }))
})
