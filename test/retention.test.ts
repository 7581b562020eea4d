/**
 * Retention: finished jobs are kept for their job's TTL and then pruned by the
 * maintenance leader; only one node leads (a Postgres session advisory lock),
 * and another takes over when the leader's session ends. Prune times come from
 * Effect's Clock, so a TestClock decides what has expired.
 */
import { assert, describe, expect, it, layer } from "@effect/vitest"
import { Clock, Context, Duration, Effect, Exit, Layer, Schedule, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { InvalidWorkerConfig, Job, Jobs, Worker } from "../src/index.ts"
import * as Pruner from "../src/internal/maintenance/Pruner.ts"
import { leaderLockKey } from "../src/internal/maintenance/Leader.ts"
import { JobStore } from "../src/internal/Store.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { countByName, makeProbe, row, startOfNextSecond, withTestClock } from "./support/probes.ts"

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

/** Holders of the maintenance leader's lock (a worker also holds its registration lock, migrations/0006). */
const leaderLockHolders = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(
    sql<{ readonly pid: number }>`
      SELECT pid FROM pg_locks
      WHERE locktype = 'advisory' AND granted AND objsubid = 1
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('effect_jobs', ${leaderLockKey.toString()}::bigint)`,
    (rows) => rows.map((r) => r.pid)
  ))

/**
 * Waits (at most 5 s) until no session of this test's database holds an advisory lock. A node
 * that stops unlocks before it closes its pool; should that unlock fail, the lock goes with the
 * session, which the server ends a moment after the pool sends Terminate (it does not wait).
 */
const noLockHolders = lockHolders.pipe(
  Effect.repeat({ until: (pids) => pids.length === 0, schedule: Schedule.spaced("10 millis") }),
  Effect.timeoutOrElse({
    duration: "5 seconds",
    orElse: () => Effect.flatMap(lockHolders, (pids) => Effect.die(new Error(`advisory locks still held by ${pids.join(", ")}`)))
  })
)

/**
 * A maintenance "node": its own pool and JobStore (a memo map of its own, so nothing is
 * shared with the test's layer), in a scope the test closes to stop the node. The scope is
 * a child of the test's: if the test fails first, the node is stopped with it.
 */
const startNode = Effect.gen(function*() {
  const scope = yield* Scope.fork(yield* Effect.scope)
  const context = yield* Layer.buildWithScope(JobStore.layer.pipe(Layer.provide(TestDb.pool({ maxConnections: 3 }))), scope).pipe(
    Effect.provideService(Layer.CurrentMemoMap, Layer.makeMemoMapUnsafe())
  )
  const errors: Array<string> = []
  const node = yield* Pruner.make(
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
        const jobs = yield* Jobs.Jobs
        const keep = yield* jobs.enqueue(Keep, {})
        const gone = yield* jobs.enqueue(Gone, {})
        const dead = yield* jobs.enqueue(DeadKeep, {})
        const forever = yield* jobs.enqueue(Forever, {})
        for (const id of [keep, gone, forever]) assert.strictEqual((yield* probe.next(id))._tag, "completed")
        assert.strictEqual((yield* probe.next(dead))._tag, "dead")

        assert.strictEqual(yield* countByName("ret-gone"), 0, "retention 0: deleted the moment it completed")
        const sql = yield* SqlClient.SqlClient
        const [times] = yield* sql<{ readonly finalized_at: Date; readonly prune_at: Date }>`
          SELECT finalized_at, prune_at FROM effect_jobs.jobs WHERE id = ${keep}::bigint`
        assert.strictEqual(times?.finalized_at.getTime(), start, "finished at the TestClock's now")
        assert.strictEqual(times?.prune_at.getTime(), minutes(60))

        // The maintenance leader prunes on the TestClock, every second (±10 %).
        const m = yield* Pruner.make({ interval: "1 second", electionInterval: "1 second" }, ignoreErrors)
        yield* m.awaitLeader
        /** Waits (real time, at most 2 s) until a round ends that was not the last one seen: `before`. */
        const roundAfter = (before: number | undefined) =>
          TestClock.withLive(
            Effect.gen(function*() {
              while ((yield* m.lastPrunedAt) === before) yield* Effect.sleep("2 millis")
            }).pipe(Effect.timeoutOption("2 seconds"))
          )
        /**
         * The time of the first round that pruned at a time >= `t` (the time the round read
         * from the clock). A round's SQL runs in real time and its next sleep starts when that
         * SQL returns, from wherever the clock is by then: a clock that raced ahead meanwhile
         * would push the next round out, past any cap the test could stop the clock at (and
         * the test would wait there forever). So there is no cap, and the clock never runs
         * ahead of the pruner: it moves in one go to 10 s before `t` (no job falls due in
         * between), then 1.1 s at a time (the longest wait of a 1 s interval, jitter
         * included: each step wakes a sleeping pruner), and after each step the test waits
         * for a round to end. (If none ends within 2 s the clock moves on anyway: that can
         * cost a step, never a hang.) A round lags the clock by a step or two at most, so the
         * round found pruned at most a few seconds after `t`, long before the next due time.
         */
        const prunedAt = (t: number) =>
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            if (now < t - 10_000) yield* TestClock.adjust(t - 10_000 - now)
            while (true) {
              const at = yield* m.lastPrunedAt
              if (at !== undefined && at >= t) return at
              yield* TestClock.adjust("1100 millis")
              yield* roundAfter(at)
            }
          })
        const first = yield* prunedAt(minutes(59))
        assert.isBelow(first, minutes(60))
        assert.strictEqual((yield* row(keep)).state, "completed", "pruned at 59 minutes and a few seconds: kept")
        yield* prunedAt(minutes(60))
        assert.strictEqual(yield* countByName("ret-keep"), 0, "pruned at 60 minutes (and a few seconds): gone")
        assert.strictEqual((yield* row(dead)).state, "dead", "the dead job has two hours")
        yield* prunedAt(minutes(120))
        assert.strictEqual(yield* countByName("ret-dead"), 0, "pruned at 120 minutes (and a few seconds): gone")
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
      yield* noLockHolders // a node that stops gives the lock back
    }))

  it.effect("a worker runs the pruner by default and reports whether it leads", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.fork(yield* Effect.scope) // closed below; by the test's scope should the test fail first
      const context = yield* startWorker({ queues: { "ret-worker": {} }, pruner: { electionInterval: "20 millis" } }, Job.toLayer(Keep, () => Effect.void))
        .pipe(Effect.provideService(Scope.Scope, scope))
      const worker = Context.get(context, Worker.Worker)
      yield* worker.pruner.awaitLeader
      assert.isTrue(yield* worker.pruner.isLeader)
      assert.lengthOf(yield* leaderLockHolders, 1, "the only worker leads")
      yield* Scope.close(scope, Exit.void)
      yield* noLockHolders // and gives the lock back when it shuts down
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
        const error = yield* Effect.flip(Pruner.validate(pruner))
        expect(error).toBeInstanceOf(InvalidWorkerConfig)
        expect(error.message).toMatch(/^pruner: /)
      }))
  }
})
