/**
 * Claims while a long transaction holds back the xmin horizon (issue 17): the dead entries
 * that every claimed job leaves in the claim index cannot be cleaned, and a claim from the
 * start of the queue reads them all. Plain claims then start at a floor past them
 * (src/internal/worker/ClaimFloor.ts), and an occasional full claim (a sweep) takes what lies
 * below the floor.
 *
 * - ClaimFloor alone: when claims start at the floor, and where the floor is.
 * - The store, under a held transaction: a claim from the floor reads a few buffers where the
 *   full claim reads one per dead entry (EXPLAIN ANALYZE of the statements as sent).
 * - A worker forced into floor claims (ClaimFloorSettings) on a TestClock: a job due before
 *   the floor and one of a better priority wait for the sweep, then run.
 */
import { assert, describe, it as unit, layer } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Queue, Schema } from "effect"
import { SqlClient, Statement } from "effect/sql"
import { TestClock } from "effect/testing"
import { Job, Jobs } from "../src/index.ts"
import type { ClaimedJobRow } from "../src/internal/Store.ts"
import { JobStore } from "../src/internal/Store.ts"
import { ClaimFloor, ClaimFloorSettings, defaults } from "../src/internal/worker/ClaimFloor.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { startOfNextSecond, withTestClock } from "./support/probes.ts"

const row = (priority: number, runAtMillis: number): ClaimedJobRow => ({
  id: "1",
  name: "n",
  queue: "q",
  priority,
  attempt: 1,
  max_attempts: 1,
  claim_count: 1,
  args: {},
  metadata: null,
  request_id: null,
  trace: null,
  created_at: new Date(0),
  run_at_ms: runAtMillis
})

describe("ClaimFloor", () => {
  unit("claims stay full while full claims are cheap", () => {
    const floor = new ClaimFloor(defaults)
    floor.record({ full: true, startedAt: 1000, durationMillis: 1, short: true, rows: [row(0, 900)] })
    assert.isUndefined(floor.plan(1001))
  })

  unit("an expensive full claim switches to floor claims until the sweep is due", () => {
    const floor = new ClaimFloor(defaults)
    floor.record({ full: true, startedAt: 1000, durationMillis: 40, short: true, rows: [row(0, 950), row(0, 900)] })
    // the earliest run_at of that short claim less the margin; the best priority claimed
    assert.deepStrictEqual(floor.plan(1040), { priority: 0, runAtMillis: 900 - defaults.marginMillis })
    const due = 1000 + 40 * (1 + defaults.sweepFactor)
    assert.isDefined(floor.plan(due - 1))
    assert.isUndefined(floor.plan(due), "the sweep")
    // the sweep was cheap: full claims again
    floor.record({ full: true, startedAt: due, durationMillis: 1, short: true, rows: [] })
    assert.isUndefined(floor.plan(due + 1))
  })

  unit("the floor moves only at a short claim that returned rows, and never back", () => {
    const floor = new ClaimFloor(defaults)
    floor.record({ full: true, startedAt: 0, durationMillis: 50, short: false, rows: [row(3, 100_000)] })
    assert.isUndefined(floor.plan(60), "a full claim leaves jobs behind it: no floor yet")
    floor.record({ full: false, startedAt: 60, durationMillis: 1, short: true, rows: [] })
    assert.isUndefined(floor.plan(70), "nothing claimed: no run_at to start from")
    floor.record({ full: false, startedAt: 70, durationMillis: 1, short: true, rows: [row(3, 100_000)] })
    assert.deepStrictEqual(floor.plan(80), { priority: 3, runAtMillis: 100_000 - defaults.marginMillis })
    floor.record({ full: false, startedAt: 80, durationMillis: 1, short: true, rows: [row(3, 50_000)] })
    assert.strictEqual(floor.plan(90)?.runAtMillis, 100_000 - defaults.marginMillis, "not moved back")
    floor.record({ full: false, startedAt: 90, durationMillis: 1, short: false, rows: [row(3, 200_000)] })
    assert.strictEqual(floor.plan(100)?.runAtMillis, 100_000 - defaults.marginMillis, "a full claim does not move it")
    // a better priority claimed (by the sweep or the buffer's probe): the floor starts there
    floor.record({ full: false, startedAt: 100, durationMillis: 1, short: false, rows: [row(1, 300_000)] })
    assert.strictEqual(floor.plan(110)?.priority, 1)
  })
})

const TestLayer = Layer.mergeAll(Jobs.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

const Task = Job.make("lt-task", { args: Schema.Struct({ label: Schema.String }), queue: "lt" })

interface PlanNode {
  readonly "Shared Hit Blocks"?: number
  readonly "Shared Read Blocks"?: number
}

layer(TestLayer, { excludeTestServices: true })("claims under a long transaction", (it) => {
  it.effect("a claim from the floor does not read the dead entries a held transaction keeps", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* JobStore
      const jobs = yield* Jobs.Jobs
      // Another session (a connection of its own, reserved by the transaction) idles in a transaction
      // with an xid: nothing claimed from now on can be cleaned.
      const release = yield* Deferred.make<void>()
      const holding = yield* Deferred.make<void>()
      const holder = yield* sql.withTransaction(
        sql`SELECT txid_current()`.pipe(Effect.andThen(Deferred.succeed(holding, undefined)), Effect.andThen(Deferred.await(release)))
      ).pipe(Effect.forkChild)
      yield* Deferred.await(holding)

      // 10,000 jobs claimed (due a minute ago), then a fresh one: the claim index holds 10,000
      // dead entries before it.
      const now = Date.now()
      const dead = 10_000
      yield* jobs.enqueueMany(Task, Array.from({ length: dead }, (_, i) => ({ label: `old-${i}` })), { queue: "lt-store", runAt: new Date(now - 60_000) })
      const claim = { queue: "lt-store", leaseMillis: 60_000, workerId: "test" }
      assert.lengthOf(yield* store.jobClaim({ ...claim, limit: dead, now: now + 1000 }), dead)
      const [fresh] = yield* jobs.enqueueMany(Task, [{ label: "fresh" }], { queue: "lt-store", runAt: new Date(now) })

      // The two claims as the store sends them, then under EXPLAIN ANALYZE (rolled back).
      const sent: Array<readonly [string, ReadonlyArray<unknown>]> = []
      const recorder: Statement.Transformer = (self) => Effect.sync(() => (sent.push(self.compile()), self))
      const floor = { priority: 0, runAtMillis: now - 1000 }
      yield* store.jobClaim({ ...claim, now: now + 3000, limit: 10 }).pipe(
        Effect.andThen(store.jobClaim({ ...claim, now: now + 3000, limit: 10, floor })),
        Effect.andThen(Effect.fail("roll back" as const)),
        sql.withTransaction,
        Effect.provideService(Statement.CurrentTransformer, recorder),
        Effect.flip
      )
      assert.lengthOf(sent, 2)
      // (EXPLAIN ANALYZE runs the UPDATE: each inside a transaction that is rolled back)
      const explain = (statement: readonly [string, ReadonlyArray<unknown>]) =>
        Effect.gen(function*() {
          let plan: PlanNode | undefined
          yield* Effect.flip(sql.withTransaction(Effect.gen(function*() {
            const rows = yield* sql.unsafe<{ readonly "QUERY PLAN": ReadonlyArray<{ readonly Plan: PlanNode }> }>(
              `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${statement[0]}`,
              statement[1] as Array<unknown>
            )
            plan = rows[0]?.["QUERY PLAN"][0]?.Plan
            return yield* Effect.fail("roll back" as const)
          })))
          return (plan?.["Shared Hit Blocks"] ?? 0) + (plan?.["Shared Read Blocks"] ?? 0)
        })
      const full = yield* explain(sent[0]!)
      const fromFloor = yield* explain(sent[1]!)
      assert.isAbove(full, 200, "the full claim reads the 10,000 dead entries and their rows")
      assert.isBelow(fromFloor * 10, full, `the claim from the floor skips them (${fromFloor} buffers against ${full})`)

      // Both take the fresh job.
      const [taken] = yield* store.jobClaim({ ...claim, now: now + 3000, limit: 10, floor })
      assert.strictEqual(taken?.id, fresh)
      assert.strictEqual(taken?.run_at_ms, now)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
    }))

  it.effect("floor claims leave a job due before the floor, or of a better priority, to the sweep, which runs them", () => {
    const t0 = startOfNextSecond()
    return withTestClock(
      t0,
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const jobs = yield* Jobs.Jobs
        const ran = yield* Queue.unbounded<string>()
        // Every full claim counts as expensive; the sweep comes 2 s (TestClock) after one.
        const settings = { ...defaults, expensiveMillis: 0, expensiveMillisPerRow: 0, sweepFactor: 1999 }
        yield* startWorker(
          { queues: { lt: { concurrency: 4, pollInterval: "1 hour" } }, maintenanceInterval: "1 hour", pruner: false },
          Layer.merge(
            Job.toLayer(Task, ({ label }) => Queue.offer(ran, label)),
            Layer.succeed(ClaimFloorSettings, settings)
          )
        )
        const stateOf = (id: string) =>
          Effect.map(sql<{ readonly state: string }>`SELECT state FROM effect_jobs.jobs WHERE id = ${id}::bigint`, (r) => r[0]?.state)

        // A full claim (no floor yet) takes the first job: its run_at sets the floor.
        yield* jobs.enqueue(Task, { label: "first" })
        assert.strictEqual(yield* Queue.take(ran), "first")

        // Due an hour ago, of a better priority, and an ordinary one: the claim from the floor takes the last only.
        const late = yield* jobs.enqueue(Task, { label: "late" }, { runAt: new Date(t0 - 3_600_000) })
        const urgent = yield* jobs.enqueue(Task, { label: "urgent" }, { priority: -1 })
        yield* jobs.enqueue(Task, { label: "ordinary" })
        assert.strictEqual(yield* Queue.take(ran), "ordinary")
        assert.strictEqual(yield* stateOf(late), "available")
        assert.strictEqual(yield* stateOf(urgent), "available")

        // The sweep is due; the next claim (a NOTIFY) reads the whole queue, best first.
        yield* TestClock.adjust("2 seconds")
        yield* jobs.enqueue(Task, { label: "next" })
        const rest = [yield* Queue.take(ran), yield* Queue.take(ran), yield* Queue.take(ran)]
        assert.sameMembers(rest, ["urgent", "late", "next"])
      })
    )
  }, 30_000)
})
