/**
 * Jobs per queue and state without a full count per request (src/internal/Counts.ts,
 * migrations/0009): unfinished jobs are always exact; finished jobs are exact below 50,000
 * and nothing is stored for them; beyond, the count is stored, reused until it is stale,
 * then recounted in the background while callers get the stored one; one session at a
 * time recounts; a failed recount is reported to the Observer; the jobs-per-state gauge
 * reads the same stored count. Clocks are TestClocks, so "stale" is exact.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Metric, Option, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { Job, Jobs, JobsAdmin, Metrics, Observer } from "../src/index.ts"
import { exactBelow, maxAgeMillis } from "../src/internal/Counts.ts"
import { JobStore } from "../src/internal/Store.ts"
import { fillJobs } from "./support/bigTable.ts"
import * as TestDb from "./support/db.ts"
import { makeProbe, waitFor, withTestClock } from "./support/probes.ts"

const Task = Job.make("counts-task", { args: Schema.Struct({}), queue: "counts" })

const TestLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer({ maxConnections: 6 })))

/** The stored count of finished jobs, as the table holds it. */
const stored = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(
    sql<{ readonly total: string; readonly counted_at: Date }>`SELECT total, counted_at FROM effect_jobs.finished_counts`,
    (rows) => rows[0] === undefined ? undefined : { total: Number(rows[0].total), countedAt: rows[0].counted_at.getTime() }
  ))

/** The exact count of one queue's jobs in one state, straight from the table. */
const exactly = (queue: string, state: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE queue = ${queue} AND state = ${state}`,
      (rows) => rows[0]!.n
    ))

const countOf = (rows: ReadonlyArray<JobsAdmin.StateCount>, queue: string, state: string) =>
  rows.find((r) => r.queue === queue && r.state === state)?.count ?? 0

layer(TestLayer, { excludeTestServices: true })("counts of a small history", (it) => {
  it.effect("are exact at every call, and nothing is stored", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const sql = yield* SqlClient.SqlClient
      yield* jobs.enqueueMany(Task, [{}, {}, {}])
      yield* jobs.enqueue(Task, {}, { delay: "1 hour" })
      assert.deepStrictEqual(yield* admin.counts({ queue: "counts" }), [
        { queue: "counts", state: "available", count: 3 },
        { queue: "counts", state: "scheduled", count: 1 }
      ])
      yield* sql`UPDATE effect_jobs.jobs SET state = 'completed', finalized_at = now() WHERE queue = 'counts' AND state = 'available'`
      assert.deepStrictEqual(yield* admin.counts({ queue: "counts" }), [
        { queue: "counts", state: "completed", count: 3 },
        { queue: "counts", state: "scheduled", count: 1 }
      ])
      assert.isUndefined(yield* stored, "a small history is never written for a read")
    }))
})

layer(TestLayer, { excludeTestServices: true })("counts of a large history", (it) => {
  it.effect("are stored, reused until stale, then recounted in the background; the gauge reads them too", () =>
    Effect.gen(function*() {
      const admin = yield* JobsAdmin.JobsAdmin
      const sql = yield* SqlClient.SqlClient
      yield* fillJobs(sql.withoutTransforms(), 60_000)
      const finished = (yield* sql<{ readonly n: number }>`
        SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE state IN ('completed', 'dead', 'cancelled')`)[0]!.n
      assert.isAtLeast(finished, exactBelow)
      const start = Date.now()
      yield* withTestClock(start, Effect.gen(function*() {
        // The first call counts at once, and stores it.
        const first = yield* admin.counts()
        assert.strictEqual(countOf(first, "emails", "completed"), yield* exactly("emails", "completed"))
        assert.deepStrictEqual(yield* stored, { total: finished, countedAt: start })

        // The table changes: some of the backlog completes, some history is deleted.
        const backlog = yield* exactly("emails", "available")
        const completedBefore = countOf(first, "emails", "completed")
        yield* sql`UPDATE effect_jobs.jobs SET state = 'completed', finalized_at = now()
                   WHERE id IN (SELECT id FROM effect_jobs.jobs WHERE queue = 'emails' AND state = 'available' LIMIT 100)`
        yield* sql`DELETE FROM effect_jobs.jobs
                   WHERE id IN (SELECT id FROM effect_jobs.jobs WHERE queue = 'emails' AND state = 'completed' ORDER BY id LIMIT 1000)`
        const completedNow = yield* exactly("emails", "completed")
        assert.strictEqual(completedNow, completedBefore - 900)

        // Within the stored count's age: unfinished exact, finished as stored.
        yield* TestClock.adjust(maxAgeMillis(0) - 1)
        const fresh = yield* admin.counts({ queue: "emails" })
        assert.strictEqual(countOf(fresh, "emails", "available"), backlog - 100, "unfinished jobs: exact")
        assert.strictEqual(countOf(fresh, "emails", "completed"), completedBefore, "finished jobs: the stored count")

        // The gauge, sampled now, reads the same stored count (it does not count the history itself).
        yield* Layer.build(Observer.metricsWith({ sampleInterval: "1 hour" }).pipe(Layer.provide(Layer.fresh(TestDb.pool({ maxConnections: 2, connectTimeout: Duration.infinity })))))
        const gauge = (state: string) => Effect.map(Metric.value(Metric.withAttributes(Metrics.jobs, { queue: "emails", state })), (v) => v.value)
        assert.strictEqual(yield* gauge("completed"), completedBefore)
        assert.strictEqual(yield* gauge("available"), backlog - 100)

        // Stale: the caller still gets the stored count at once, and a recount starts behind it.
        yield* TestClock.adjust(1)
        const stale = yield* admin.counts({ queue: "emails" })
        assert.strictEqual(countOf(stale, "emails", "completed"), completedBefore, "not waited for")
        const now = start + maxAgeMillis(0)
        yield* TestClock.withLive(waitFor(
          "the background recount",
          Effect.map(stored, (s) => (s !== undefined && s.countedAt === now ? Option.some(s) : Option.none()))
        ))
        assert.strictEqual(countOf(yield* admin.counts({ queue: "emails" }), "emails", "completed"), completedNow)
      }))
    }))

  it.effect("one session at a time recounts: a recount finds another under way and leaves it to it", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const sql = yield* SqlClient.SqlClient
      const measure = <A, E>(count: Effect.Effect<A, E>) => Effect.map(count, (a) => [a, 0] as const)
      const before = yield* stored
      // Another session holds the recount's lock, in a transaction left open.
      const locked = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const holder = yield* Effect.forkChild(sql.withTransaction(Effect.gen(function*() {
        yield* sql`SELECT pg_advisory_xact_lock(hashtextextended('effect_jobs', ${0x656a2d636f756e74n.toString()}::bigint))`
        yield* Deferred.succeed(locked, undefined)
        yield* Deferred.await(release)
      })))
      yield* Deferred.await(locked)
      const later = before!.countedAt + 3_600_000
      assert.isUndefined(yield* store.countsSnapshotRefresh(later, later, measure))
      assert.deepStrictEqual(yield* stored, before, "nothing recounted")
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      const done = yield* store.countsSnapshotRefresh(later, later, measure)
      assert.strictEqual(done?.countedAt, later)
      // And a recount that finds the stored one fresh enough (another session just did it) counts nothing.
      assert.isUndefined(yield* store.countsSnapshotRefresh(later + 1, later - 1, measure))
    }))

  it.effect("a background recount that fails is reported to the Observer; callers keep the stored count", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const probe = yield* makeProbe
      // A JobsAdmin of its own (fresh: not the test layer's), with the probe as its Observer.
      const admin = Context.get(yield* Layer.build(Layer.fresh(JobsAdmin.layer).pipe(Layer.provide(probe.layer))), JobsAdmin.JobsAdmin)
      const before = (yield* stored)!
      // Every write of the stored count is refused from now on.
      yield* sql`ALTER TABLE effect_jobs.finished_counts ADD CONSTRAINT counts_test_refuse CHECK (total < 0) NOT VALID`
      yield* withTestClock(before.countedAt + maxAgeMillis(0), Effect.gen(function*() {
        const completed = yield* admin.counts({ queue: "emails" })
        assert.isAbove(countOf(completed, "emails", "completed"), 0, "the stored count, still")
        yield* TestClock.withLive(waitFor(
          "the recount's failure, reported",
          Effect.sync(() => Option.fromNullishOr(probe.workerErrors.find((e) => e.includes("could not recount the finished jobs"))))
        ))
      }))
      assert.deepStrictEqual(yield* stored, before)
      yield* sql`ALTER TABLE effect_jobs.finished_counts DROP CONSTRAINT counts_test_refuse`
      assert.isTrue(Exit.isSuccess(yield* Effect.exit(admin.counts())))
    }))
})
