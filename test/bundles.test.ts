/**
 * Bundles: atomic enqueue, progress, exactly-once finish and follow-up across
 * workers; the finisher's poll interval (a Duration.Input, validated).
 */
import { assert, layer } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Layer, Queue, Schema } from "effect"
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

/**
 * Sum of the parts' results; how many members did not complete. The follow-up names its bundle
 * in its metadata, so a test counts the follow-ups of its own bundles only (and would see two
 * for one bundle).
 */
const finisher = Bundle.toLayer(Batch, (finished) =>
  Effect.succeed(Jobs.entry(Report, {
    sum: finished.members.reduce(
      (sum, m) => sum + (m.name === "part" && m.state === "completed" ? (m.result as { doubled: number }).doubled : 0),
      0
    ),
    failed: finished.members.filter((m) => m.state !== "completed").length
  }, { metadata: { bundle: finished.id } })))

/**
 * For each of these bundles: the follow-up it recorded, the bundle that follow-up names, its args,
 * and how many follow-ups (report jobs) name the bundle.
 */
const followUpsOf = (bundleIds: ReadonlyArray<string>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{
      readonly bundle: string
      readonly follow_up_id: string | null
      readonly follow_up_of: string | null
      readonly args: { readonly sum: number; readonly failed: number } | null
      readonly reports: number
    }>`
      SELECT b.id::text AS bundle, b.follow_up_id::text AS follow_up_id,
             f.metadata->>'bundle' AS follow_up_of, f.args,
             (SELECT count(*)::int FROM effect_jobs.jobs r
              WHERE r.name = 'report' AND r.metadata->>'bundle' = b.id::text) AS reports
      FROM effect_jobs.bundles b LEFT JOIN effect_jobs.jobs f ON f.id = b.follow_up_id
      WHERE b.id IN (SELECT jsonb_array_elements_text(${JSON.stringify(bundleIds)}::jsonb)::bigint)
      ORDER BY b.id`)

/** Rows in the two tables a bundle writes to. */
const rowCounts = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(
    sql<{ readonly jobs: number; readonly bundles: number }>`
      SELECT (SELECT count(*)::int FROM effect_jobs.jobs) AS jobs, (SELECT count(*)::int FROM effect_jobs.bundles) AS bundles`,
    (rows) => rows[0]!
  ))

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
      const jobs = yield* Jobs.Jobs
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
      const [followUp] = yield* followUpsOf([bundleId])
      assert.deepStrictEqual(followUp, {
        bundle: bundleId,
        follow_up_id: info.followUpId!,
        follow_up_of: bundleId,
        args: { sum: 12, failed: 1 },
        reports: 1
      })
      assert.lengthOf(finishedEvents, 1)
    }))

  it.effect("under concurrency, bundles finish exactly once, round after round (3 workers, 3 finishers)", () =>
    Effect.gen(function*() {
      const rounds = 30
      const perRound = 8
      const parts = 5
      const finished = yield* Queue.unbounded<string>()
      const events = new Map<string, number>()
      const count = (id: string) => events.set(id, (events.get(id) ?? 0) + 1)
      const observer = Observer.add({
        ...Observer.noop,
        bundleFinished: (b) => Effect.asVoid(Queue.offer(finished, b.id))
      })
      for (let i = 0; i < 3; i++) {
        yield* Layer.build(finisher.pipe(Layer.provide([observer, Layer.fresh(TestDb.pool({ maxConnections: 3 }))])))
        yield* startWorker({ queues: { "b-parts": { concurrency: 4, prefetch: 0 } } }, Layer.merge(handlers, Layer.fresh(TestDb.pool())))
      }
      const jobs = yield* Jobs.Jobs
      /** Bundle id -> the sum its follow-up must carry (its parts are base * 10 + 0..4, doubled). */
      const expectedSum = new Map<string, number>()
      for (let round = 0; round < rounds; round++) {
        const bases = Array.from({ length: perRound }, (_, b) => round * perRound + b)
        const bundles = yield* Effect.forEach(
          bases,
          (base) => jobs.enqueueBundle(Batch, Array.from({ length: parts }, (_, n) => Jobs.entry(Part, { n: base * 10 + n }))),
          { concurrency: 4 }
        )
        const ids = bundles.map((b) => b.bundleId)
        bundles.forEach(({ bundleId }, b) => expectedSum.set(bundleId, 2 * (parts * bases[b]! * 10 + (parts * (parts - 1)) / 2)))
        // every bundle of the round reported (events of earlier rounds' bundles are counted too)
        const pending = new Set(ids)
        while (pending.size > 0) {
          const id = yield* Queue.take(finished)
          count(id)
          pending.delete(id)
        }
        for (const id of ids) {
          assert.strictEqual(events.get(id), 1, `round ${round}, bundle ${id}: one event`)
          assert.isTrue((yield* jobs.bundleProgress(id)).finished, `round ${round}, bundle ${id}: finished`)
        }
        const followUps = yield* followUpsOf(ids)
        assert.sameMembers(followUps.map((f) => f.bundle), ids, `round ${round}: every bundle is there`)
        for (const f of followUps) {
          assert.strictEqual(f.reports, 1, `round ${round}, bundle ${f.bundle}: one follow-up enqueued`)
          assert.strictEqual(f.follow_up_of, f.bundle, `round ${round}, bundle ${f.bundle}: the follow-up it recorded is its own`)
          assert.deepStrictEqual(f.args, { sum: expectedSum.get(f.bundle)!, failed: 0 })
        }
      }
      // A late second finish of any round's bundle: its event, and its follow-up, would show now.
      for (const id of yield* Queue.clear(finished)) count(id)
      const all = Array.from(expectedSum.keys())
      assert.lengthOf(all, rounds * perRound)
      for (const id of all) assert.strictEqual(events.get(id), 1, `bundle ${id}: one event in all`)
      assert.sameMembers(Array.from(events.keys()), all, "no event for a bundle of another test")
      const followUps = yield* followUpsOf(all)
      assert.lengthOf(followUps, all.length)
      for (const f of followUps) assert.strictEqual(f.reports, 1, `bundle ${f.bundle}: one follow-up in all`)
    }), { timeout: 60_000 })

  it.effect("a bundle whose onFinish fails is retried alone and does not hold back the others", () =>
    Effect.gen(function*() {
      const Picky = Bundle.make("picky")
      const finishedIds: Array<string> = []
      const done = yield* Deferred.make<void>()
      const jobs = yield* Jobs.Jobs
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

  it.effect("45 bundles whose onFinish always fails, with the lowest ids, do not hold back a later one; they are retried", () =>
    Effect.gen(function*() {
      const Stubborn = Bundle.make("stubborn")
      const jobs = yield* Jobs.Jobs
      const bad: Array<string> = []
      const members: Array<string> = []
      // More than two passes of 20: the finisher's listener and its poll may each be in a pass at once.
      for (let i = 0; i < 45; i++) {
        const b = yield* jobs.enqueueBundle(Stubborn, [Jobs.entry(Part, { n: i })], { metadata: { fail: true } })
        bad.push(b.bundleId)
        members.push(...b.ids)
      }
      const good = yield* jobs.enqueueBundle(Stubborn, [Jobs.entry(Part, { n: 100 })], { metadata: { fail: false } })
      members.push(...good.ids)
      // Every bundle finished before any finisher runs: the 45 failing ones are all pending at its first look.
      yield* Effect.scoped(Effect.gen(function*() {
        yield* startWorker({ queues: { "b-parts": { concurrency: 4 } } }, Layer.merge(handlers, Layer.fresh(TestDb.pool())))
        yield* Effect.forEach(members, (id) => jobs.await(Part, id), { concurrency: 8, discard: true })
      }))
      for (const id of [...bad, good.bundleId]) assert.isTrue((yield* jobs.bundleProgress(id)).finished, `bundle ${id} finished`)

      const attempts = new Map<string, number>()
      const retried = yield* Deferred.make<string>()
      const allTried = yield* Deferred.make<void>()
      const finishedIds: Array<string> = []
      const goodDone = yield* Deferred.make<void>()
      yield* Layer.build(
        Bundle.toLayer(Stubborn, (finished) =>
          Effect.suspend(() => {
            if (!(finished.metadata as { fail: boolean }).fail) return Effect.succeed(undefined)
            const n = (attempts.get(finished.id) ?? 0) + 1
            attempts.set(finished.id, n)
            if (attempts.size === bad.length) Deferred.doneUnsafe(allTried, Exit.void)
            return Effect.andThen(n === 2 ? Deferred.succeed(retried, finished.id) : Effect.void, Effect.fail("onFinish bug"))
          }), { pollInterval: "50 millis" }).pipe(
            Layer.provide([
              Observer.add({
                ...Observer.noop,
                bundleFinished: (b) =>
                  Effect.andThen(Effect.sync(() => finishedIds.push(b.id)), Deferred.succeed(goodDone, undefined))
              }),
              Layer.fresh(TestDb.pool({ maxConnections: 3 }))
            ])
          )
      )
      yield* Deferred.await(goodDone).pipe(
        Effect.timeoutOrElse({
          duration: "20 seconds",
          orElse: () => Effect.die(new Error(`the good bundle was never finished; failing ones tried: ${attempts.size}`))
        })
      )
      assert.deepStrictEqual(finishedIds, [good.bundleId])
      yield* Deferred.await(allTried)
      assert.sameMembers(Array.from(attempts.keys()), bad, "every failing bundle was tried")
      // the failing ones stay pending and are tried again
      assert.include(bad, yield* Deferred.await(retried))
      for (const id of bad) {
        const progress = yield* jobs.bundleProgress(id)
        assert.deepStrictEqual([progress.finished, progress.followUpId], [true, undefined])
      }
      const sql = yield* SqlClient.SqlClient
      const pending = yield* sql<{ readonly n: number }>`
        SELECT count(*)::int AS n FROM effect_jobs.bundles WHERE name = 'stubborn' AND NOT follow_up_done`
      assert.strictEqual(pending[0]?.n, 45)
    }), { timeout: 60_000 })

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
      const jobs = yield* Jobs.Jobs
      const { bundleId } = yield* jobs.enqueueBundle(Bundle.make("polled"), [Jobs.entry(Part, { n: 1 }, { queue: "b-nobody" })])
      const sql = yield* SqlClient.SqlClient
      yield* sql`UPDATE effect_jobs.bundles SET remaining = 0, finished_at = now() WHERE id = ${bundleId}::bigint`
      assert.strictEqual(yield* Deferred.await(done), bundleId)
    }))

  it.effect("bad bundles are rejected and write nothing", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const before = yield* rowCounts
      const e1 = yield* Effect.flip(jobs.enqueueBundle(Batch, []))
      assert.strictEqual(e1._tag, "InvalidJobOptions")
      const e2 = yield* Effect.flip(jobs.enqueueBundle(Batch, [Jobs.entry(Part, { n: 1 }, { uniqueKey: "k" })]))
      assert.strictEqual(e2._tag, "InvalidJobOptions")
      const e3 = yield* Effect.flip(jobs.enqueueBundle(Batch, [Jobs.entry(Part, { n: 1 }), Jobs.entry(Part, { n: "x" } as never)]))
      assert.strictEqual(e3._tag, "InvalidJobArgs")
      assert.deepStrictEqual(yield* rowCounts, before, "no job and no bundle row written")
      const e4 = yield* Effect.flip(jobs.bundleProgress("123456789"))
      assert.strictEqual(e4._tag, "JobNotFound")
    }))
})
