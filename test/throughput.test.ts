/**
 * Throughput per minute (migrations/0009), for the dashboard's charts: what a worker tallies
 * (completed, retried, dead, cancelled; snoozes and releases not) and writes to one row per
 * (minute, queue, worker), adding up across writes and keeping what a failed write did not
 * store; the rescuer's and an operator's cancels under their own names; `JobsAdmin.throughput` summing the workers' rows into a
 * zero-filled window, and refusing a bad window; a real worker counting under its
 * `workerId`; the maintenance leader deleting rows older than 6 hours.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Exit, Layer, Option, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs, JobsAdmin } from "../src/index.ts"
import * as Pruner from "../src/internal/maintenance/Pruner.ts"
import { type Applied, type ClaimedJobRow, type FinishRow, JobStore } from "../src/internal/Store.ts"
import * as Throughput from "../src/internal/Throughput.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { leaseLapsed, makeProbe, waitFor, withTestClock } from "./support/probes.ts"

const Task = Job.make("tp-task", { args: Schema.Struct({ n: Schema.Number }), queue: "tp" })

const TestLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

/** A whole minute (UTC) in the near future: outcomes written at `minute + 10 s` count in it. */
const aMinute = () => Math.ceil(Date.now() / 60_000) * 60_000 + 60_000

interface Row {
  readonly queue: string
  readonly worker: string
  readonly completed: number
  readonly retried: number
  readonly dead: number
  readonly cancelled: number
}

/** The throughput rows of one minute, as stored (one per queue and worker). */
const rowsOf = (minute: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<Row>`SELECT queue, worker, completed, retried, dead, cancelled FROM effect_jobs.throughput
             WHERE minute = ${new Date(minute).toISOString()}::timestamptz ORDER BY queue, worker`)

/** Enqueues `n` jobs on `queue` and claims them at `now`, as a worker would. */
const claimed = (queue: string, n: number, now: number, leaseMillis = 60_000) =>
  Effect.gen(function*() {
    const jobs = yield* Jobs.Jobs
    const store = yield* JobStore
    yield* jobs.enqueueMany(Task, Array.from({ length: n }, (_, i) => ({ n: i })), { queue })
    return yield* store.jobClaim({ queue, limit: n, now, leaseMillis, workerId: "tp" })
  })

const outcome = (job: ClaimedJobRow, now: number, o: Partial<FinishRow> & Pick<FinishRow, "state">): FinishRow => ({
  id: job.id,
  token: job.claim_count,
  run_at: null,
  attempt_delta: 0,
  result: null,
  error: o.state === "completed" ? null : { attempt: job.attempt, at: new Date(now).toISOString(), kind: "Boom", message: "boom" },
  ...o
})

layer(TestLayer, { excludeTestServices: true })("throughput", (it) => {
  it.effect("a worker's tallies go to one row per minute, queue and worker; throughput sums them, zero-filled", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const admin = yield* JobsAdmin.JobsAdmin
      const minute = aMinute()
      const now = minute + 10_000
      /** A written outcome as the completer sees it: the row it sent, the state it ended in. */
      const written = (queue: string, state: Applied["state"], attemptDelta = 0) =>
        [{ ...outcome({ id: "1", claim_count: 1, attempt: 1 } as ClaimedJobRow, now, { state: "completed" }), attempt_delta: attemptDelta },
         { state, cancelReason: null, queue }] as const
      const errors: Array<string> = []
      const scope = yield* Scope.make()
      const worker1 = yield* Throughput.make({ workerId: "worker-1", store, onError: (m) => Effect.sync(() => errors.push(m)) })
        .pipe(Scope.provide(scope))
      for (const [row, applied] of [
        written("tp-a", "completed"),
        written("tp-a", "completed"),
        written("tp-a", "scheduled"), // a failure, retried later
        written("tp-a", "available"), // retried at once
        written("tp-a", "scheduled", -1), // snoozed: not counted
        written("tp-a", "available", -1), // released at shutdown: not counted
        written("tp-a", "dead"),
        written("tp-a", "cancelled"),
        written("tp-b", "completed")
      ]) worker1.tally(row, applied, now)
      yield* worker1.flush
      // A second write adds to the rows; nothing tallied writes nothing.
      worker1.tally(...written("tp-a", "completed"), now + 1000)
      yield* worker1.flush
      yield* worker1.flush
      // Another worker's outcomes go to its own row; its last ones are written when it stops.
      const scope2 = yield* Scope.make()
      const worker2 = yield* Throughput.make({ workerId: "worker-2", store, onError: () => Effect.void }).pipe(Scope.provide(scope2))
      worker2.tally(...written("tp-b", "dead"), now)
      yield* Scope.close(scope2, Exit.void)

      assert.deepStrictEqual(yield* rowsOf(minute), [
        { queue: "tp-a", worker: "worker-1", completed: 3, retried: 2, dead: 1, cancelled: 1 },
        { queue: "tp-b", worker: "worker-1", completed: 1, retried: 0, dead: 0, cancelled: 0 },
        { queue: "tp-b", worker: "worker-2", completed: 0, retried: 0, dead: 1, cancelled: 0 }
      ])
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(errors, [])

      // Read a minute later: the window of 3 minutes ends with the current (empty) minute.
      const window = yield* withTestClock(minute + 60_000 + 5_000, admin.throughput({ minutes: 3 }))
      const zero = { completed: 0, retried: 0, dead: 0, cancelled: 0 }
      assert.deepStrictEqual(window, [
        { at: new Date(minute - 60_000), queue: "tp-a", ...zero },
        { at: new Date(minute - 60_000), queue: "tp-b", ...zero },
        { at: new Date(minute), queue: "tp-a", completed: 3, retried: 2, dead: 1, cancelled: 1 },
        { at: new Date(minute), queue: "tp-b", completed: 1, retried: 0, dead: 1, cancelled: 0 },
        { at: new Date(minute + 60_000), queue: "tp-a", ...zero },
        { at: new Date(minute + 60_000), queue: "tp-b", ...zero }
      ])
      // One queue: every minute of the window, even with nothing in it.
      assert.deepStrictEqual(
        yield* withTestClock(minute + 5_000, admin.throughput({ queue: "tp-b", minutes: 2 })),
        [{ at: new Date(minute - 60_000), queue: "tp-b", ...zero }, { at: new Date(minute), queue: "tp-b", completed: 1, retried: 0, dead: 1, cancelled: 0 }]
      )
      assert.deepStrictEqual(
        yield* withTestClock(minute + 5_000, admin.throughput({ queue: "tp-none", minutes: 1 })),
        [{ at: new Date(minute), queue: "tp-none", ...zero }]
      )
      // The default window is the last hour.
      const hour = yield* withTestClock(minute + 5_000, admin.throughput({ queue: "tp-a" }))
      assert.strictEqual(hour.length, 60)
      assert.deepStrictEqual(hour[59], { at: new Date(minute), queue: "tp-a", completed: 3, retried: 2, dead: 1, cancelled: 1 })
    }))

  it.effect("a write that fails keeps the tallies for the next one, and is reported", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const sql = yield* SqlClient.SqlClient
      const minute = aMinute() + 60_000
      const errors: Array<string> = []
      const recorder = yield* Throughput.make({ workerId: "tp-failing", store, onError: (m) => Effect.sync(() => errors.push(m)) })
      const row = outcome({ id: "1", claim_count: 1, attempt: 1 } as ClaimedJobRow, minute, { state: "completed" })
      recorder.tally(row, { state: "completed", cancelReason: null, queue: "tp-fail" }, minute)
      yield* sql`ALTER TABLE effect_jobs.throughput ADD CONSTRAINT tp_test_refuse CHECK (queue <> 'tp-fail') NOT VALID`
      assert.isTrue(Exit.isFailure(yield* Effect.exit(recorder.flush)))
      recorder.tally(row, { state: "dead", cancelReason: null, queue: "tp-fail" }, minute)
      yield* sql`ALTER TABLE effect_jobs.throughput DROP CONSTRAINT tp_test_refuse`
      yield* recorder.flush
      assert.deepStrictEqual((yield* rowsOf(minute)).filter((r) => r.queue === "tp-fail"), [
        { queue: "tp-fail", worker: "tp-failing", completed: 1, retried: 0, dead: 1, cancelled: 0 }
      ])
    }))

  it.effect("a bad window or queue is an InvalidAdminRequest", () =>
    Effect.gen(function*() {
      const admin = yield* JobsAdmin.JobsAdmin
      for (const options of [{ minutes: 0 }, { minutes: 361 }, { minutes: 1.5 }, { minutes: Number.NaN }, { queue: "" }]) {
        const exit = yield* Effect.exit(admin.throughput(options))
        assert.isTrue(Exit.isFailure(exit) && exit.cause.reasons.some((r) => r._tag === "Fail" && r.error._tag === "InvalidAdminRequest"))
      }
      assert.strictEqual((yield* admin.throughput({ minutes: 360 })).length % 360, 0, "360 minutes is allowed")
    }))

  it.effect("rescued jobs count as retried or dead under (rescuer), an operator's cancel of a waiting job under (operator)", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const admin = yield* JobsAdmin.JobsAdmin
      const jobs = yield* Jobs.Jobs
      const sql = yield* SqlClient.SqlClient
      const minute = aMinute()
      const now = minute + 10_000
      // Claimed a second ahead (the jobs are due by then) with a lease of 1 ms: lease deadlines
      // are the database's clock, so wait until it says they lapsed.
      const lost = yield* claimed("tp-rescue", 2, Date.now() + 1000, 1)
      for (const job of lost) yield* leaseLapsed(job.id)
      // The second one was on its last attempt: rescued to dead.
      yield* sql`UPDATE effect_jobs.jobs SET max_attempts = attempt WHERE id = ${lost[1]!.id}::bigint`
      assert.strictEqual(yield* store.jobRescueExpired(now, 100), 2)
      const waiting = yield* jobs.enqueue(Task, { n: 1 }, { queue: "tp-cancel" })
      yield* withTestClock(now, admin.cancel(waiting))
      assert.deepStrictEqual((yield* rowsOf(minute)).filter((r) => r.queue.startsWith("tp-rescue") || r.queue === "tp-cancel"), [
        { queue: "tp-cancel", worker: "(operator)", completed: 0, retried: 0, dead: 0, cancelled: 1 },
        { queue: "tp-rescue", worker: "(rescuer)", completed: 0, retried: 1, dead: 1, cancelled: 0 }
      ])
    }))

  it.effect("a worker's outcomes are counted under its workerId", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const Work = Job.make("tp-work", { args: Schema.Struct({ fail: Schema.Boolean }), queue: "tp-worker", maxAttempts: 1 })
      const probe = yield* makeProbe
      const scope = yield* Scope.make()
      yield* startWorker(
        { queues: { "tp-worker": { concurrency: 2 } }, workerId: "tp-worker-1", pruner: false },
        Layer.merge(Job.toLayer(Work, ({ fail }) => (fail ? Effect.fail("boom") : Effect.void)), probe.layer)
      ).pipe(Scope.provide(scope))
      const ids = yield* jobs.enqueueMany(Work, [{ fail: false }, { fail: false }, { fail: true }])
      for (const id of ids) yield* probe.next(id)
      // Written once a second, and once more at shutdown: stop it, then every outcome is in.
      yield* Scope.close(scope, Exit.void)
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ readonly worker: string; readonly completed: number; readonly dead: number }>`
        SELECT worker, sum(completed)::int AS completed, sum(dead)::int AS dead FROM effect_jobs.throughput
        WHERE queue = 'tp-worker' GROUP BY worker`
      assert.deepStrictEqual(rows, [{ worker: "tp-worker-1", completed: 2, dead: 1 }])
    }))

  it.effect("the maintenance leader deletes the rows older than 6 hours", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const minute = Math.floor(Date.now() / 60_000) * 60_000
      const old = minute - 6 * 60 * 60_000 - 60_000
      const kept = minute - 6 * 60 * 60_000 + 60_000
      for (const at of [old, kept]) {
        yield* sql`INSERT INTO effect_jobs.throughput (minute, queue, worker, completed)
                   VALUES (${new Date(at).toISOString()}::timestamptz, 'tp-prune', 'w', 1)`
      }
      const pruner = yield* Pruner.make({ interval: "1 second", electionInterval: "1 second" }, () => Effect.void)
      yield* pruner.awaitLeader
      yield* waitFor("a pruning round", Effect.map(pruner.lastPrunedAt, Option.fromNullishOr))
      const left = yield* sql<{ readonly minute: Date }>`
        SELECT minute FROM effect_jobs.throughput WHERE queue = 'tp-prune' ORDER BY minute`
      assert.deepStrictEqual(left.map((r) => r.minute.getTime()), [kept])
    }))
})
