/**
 * Retention: finished jobs are kept for their job's TTL and then pruned by the
 * maintenance leader; only one node leads (a Postgres session advisory lock),
 * and another takes over when the leader's session ends. Prune times come from
 * Effect's Clock, so a TestClock decides what has expired.
 */
import { assert, describe, expect, it, layer } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Layer, Option, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { InvalidWorkerConfig, Job, Jobs, Worker } from "../src/index.ts"
import * as Maintenance from "../src/internal/Maintenance.ts"
import { JobStore } from "../src/internal/Store.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { advanceUntil, countByName, makeProbe, row, startOfNextSecond, withTestClock } from "./support/probes.ts"

const q = "ret"
const Keep = Job.make("ret-keep", { args: Schema.Struct({}), queue: q, retention: "1 hour" })
const Gone = Job.make("ret-gone", { args: Schema.Struct({}), queue: q, retention: 0 })
const DeadKeep = Job.make("ret-dead", { args: Schema.Struct({}), queue: q, retention: "2 hours", maxAttempts: 1 })
const Forever = Job.make("ret-forever", { args: Schema.Struct({}), queue: q, retention: Duration.infinity })

const Handlers = Layer.mergeAll(
  Job.toLayer(Keep, () => Effect.void),
  Job.toLayer(Gone, () => Effect.void),
  Job.toLayer(DeadKeep, () => Effect.fail("no")),
  Job.toLayer(Forever, () => Effect.void)
)

const TestLayer = Layer.mergeAll(Jobs.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

const ignoreErrors = () => Effect.void

/** Holders of advisory locks in this test's database (the maintenance leader). */
const lockHolders = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(
    sql<{ readonly pid: number }>`
      SELECT pid FROM pg_locks
      WHERE locktype = 'advisory' AND granted
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    (rows) => rows.map((r) => r.pid)
  ))

/**
 * A maintenance "node": its own pool and JobStore (a memo map of its own, so nothing is
 * shared with the test's layer), in a scope the test closes to stop the node.
 */
const startNode = Effect.gen(function*() {
  const scope = yield* Scope.make()
  const context = yield* Layer.buildWithScope(JobStore.layer.pipe(Layer.provide(TestDb.pool({ maxConnections: 3 }))), scope).pipe(
    Effect.provideService(Layer.CurrentMemoMap, Layer.makeMemoMapUnsafe())
  )
  const errors: Array<string> = []
  const node = yield* Maintenance.make(
    { interval: "20 millis", electionInterval: "20 millis" },
    (message) => Effect.sync(() => errors.push(message))
  ).pipe(Effect.provide(context), Scope.provide(scope))
  return { ...node, scope, errors }
})

layer(TestLayer, { excludeTestServices: true })("retention", (it) => {
  it.effect("finished jobs are kept for their retention, then pruned (TestClock decides)", () => {
    const start = startOfNextSecond()
    const minutes = (n: number) => start + n * 60_000
    return withTestClock(
      start,
      Effect.gen(function*() {
        const probe = yield* makeProbe
        yield* startWorker({ queues: { [q]: {} }, pruner: false }, Layer.mergeAll(Handlers, probe.layer))
        const jobs = yield* Jobs
        const keep = yield* jobs.enqueue(Keep, {})
        const gone = yield* jobs.enqueue(Gone, {})
        const dead = yield* jobs.enqueue(DeadKeep, {})
        const forever = yield* jobs.enqueue(Forever, {})
        for (const id of [keep, gone, forever]) assert.strictEqual((yield* probe.next(id))._tag, "completed")
        assert.strictEqual((yield* probe.next(dead))._tag, "dead")

        assert.strictEqual(yield* countByName("ret-gone"), 0, "retention 0: deleted the moment it completed")
        const sql = yield* SqlClient.SqlClient
        const [times] = yield* sql<{ readonly finalized_at: Date; readonly prune_at: Date }>`
          SELECT finalized_at, prune_at FROM effect_jobs WHERE id = ${keep}::bigint`
        assert.strictEqual(times?.finalized_at.getTime(), start, "finished at the TestClock's now")
        assert.strictEqual(times?.prune_at.getTime(), minutes(60))

        // The maintenance leader prunes on the TestClock.
        const m = yield* Maintenance.make({ interval: "10 seconds", electionInterval: "1 second" }, ignoreErrors)
        yield* m.awaitLeader
        /** Moves the TestClock in 10 s steps, never past `limit`, until a round pruned at a time >= `t`. */
        const prunedAt = (t: number, limit: number) =>
          advanceUntil(
            Effect.map(m.lastPrunedAt, (at) => (at !== undefined && at >= t ? Option.some(at) : Option.none())),
            { step: "10 seconds", limit }
          )
        const first = yield* prunedAt(minutes(59), minutes(59.5))
        assert.isBelow(first, minutes(60))
        assert.strictEqual((yield* row(keep)).state, "completed", "pruned at 59-59.5 minutes: kept")
        yield* prunedAt(minutes(60), minutes(61))
        assert.strictEqual(yield* countByName("ret-keep"), 0, "pruned at 60-61 minutes: gone")
        assert.strictEqual((yield* row(dead)).state, "dead", "the dead job has two hours")
        yield* prunedAt(minutes(120), minutes(121))
        assert.strictEqual(yield* countByName("ret-dead"), 0, "121 minutes: pruned")
        assert.strictEqual((yield* row(forever)).state, "completed", "an infinite retention is never pruned")
        assert.strictEqual(yield* m.pruned, 2)
      })
    )
  })

  it.effect("one leader at a time; another node takes over when the leader stops or its session ends", () =>
    Effect.gen(function*() {
      const a = yield* startNode
      yield* a.awaitLeader
      const b = yield* startNode
      assert.deepStrictEqual((yield* lockHolders).length, 1, "one lock holder")
      assert.isTrue(yield* a.isLeader)
      assert.isFalse(yield* b.isLeader)

      // 1. The leader shuts down: it unlocks, and b takes over.
      yield* Scope.close(a.scope, Exit.void)
      assert.isFalse(yield* a.isLeader)
      yield* b.awaitLeader
      const [bPid] = yield* lockHolders
      assert.isDefined(bPid)

      // 2. The leader's session ends (its connection is killed): Postgres drops the lock,
      //    b notices at its next round and stops leading; b or c leads again.
      const c = yield* startNode
      const sql = yield* SqlClient.SqlClient
      yield* sql`SELECT pg_terminate_backend(${bPid!})`
      yield* b.awaitFollower
      yield* Effect.raceFirst(b.awaitLeader, c.awaitLeader)
      const holders = yield* lockHolders
      assert.strictEqual(holders.length, 1)
      assert.notStrictEqual(holders[0], bPid, "the new leader holds the lock on a live session")
      assert.notStrictEqual(yield* b.isLeader, yield* c.isLeader, "exactly one of them leads")
      expect(b.errors.join("\n")).toContain("maintenance")
      yield* Scope.close(b.scope, Exit.void)
      yield* Scope.close(c.scope, Exit.void)
      assert.lengthOf(yield* lockHolders, 0, "a node that stops gives the lock back")
    }))

  it.effect("a worker runs the pruner by default and reports whether it leads", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* startWorker({ queues: { "ret-worker": {} }, pruner: { electionInterval: "20 millis" } }, Job.toLayer(Keep, () => Effect.void))
        .pipe(Effect.provideService(Scope.Scope, scope))
      const worker = Context.get(context, Worker.Worker)
      yield* worker.pruner.awaitLeader
      assert.isTrue(yield* worker.pruner.isLeader)
      assert.lengthOf(yield* lockHolders, 1, "the only worker leads")
      yield* Scope.close(scope, Exit.void)
      assert.lengthOf(yield* lockHolders, 0, "and gives the lock back when it shuts down")
    }))
})

describe("retention and pruner configuration", () => {
  it("a negative retention is refused when the job is defined", () => {
    expect(() => Job.make("bad-retention", { args: Schema.Struct({}), retention: -1 })).toThrow(/retention must not be negative/)
    expect(() => Job.make("bad-retention", { args: Schema.Struct({}), retention: "-5 minutes" })).toThrow(/retention/)
  })

  for (
    const [label, pruner] of [
      ["a negative interval", { interval: -1 }],
      ["a zero election interval", { electionInterval: 0 }],
      ["a batch size of 0", { batchSize: 0 }]
    ] as const
  ) {
    it.effect(`a pruner with ${label} is an InvalidWorkerConfig`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Maintenance.validate(pruner))
        expect(error).toBeInstanceOf(InvalidWorkerConfig)
        expect(error.message).toMatch(/^pruner: /)
      }))
  }
})
