/**
 * Enqueue (DESIGN "Enqueue"): ids, batches, transactions, unique keys,
 * priorities, delays, request ids and the typed errors of bad input.
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Deferred, Effect, Layer, References, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { InvalidJobArgs, InvalidJobOptions, Job, Jobs, RequestId } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import {
  advanceUntil,
  countByName,
  exists,
  makeProbe,
  row,
  rowsOfQueue,
  startOfNextSecond,
  withTestClock
} from "./support/probes.ts"

const Email = Job.make("enqueue-email", {
  args: Schema.Struct({ to: Schema.String, sendAt: Schema.Date }),
  queue: "e-basic"
})
const Sms = Job.make("enqueue-sms", { args: Schema.Struct({ phone: Schema.String }), queue: "e-basic-sms", priority: 2 })
const Tx = Job.make("enqueue-tx", { args: Schema.Struct({ label: Schema.String }), queue: "e-tx" })
const Unique = Job.make("enqueue-unique", { args: Schema.Struct({ n: Schema.Number }), queue: "e-unique" })
const UniqueTwin = Job.make("enqueue-unique-twin", { args: Schema.Struct({ n: Schema.Number }), queue: "e-unique" })
const UniqueFree = Job.make("enqueue-unique-free", { args: Schema.Struct({ n: Schema.Number }), queue: "e-unique-free" })
const Ordered = Job.make("enqueue-ordered", { args: Schema.Struct({ label: Schema.String }), queue: "e-prio" })
const Later = Job.make("enqueue-later", { args: Schema.Struct({ label: Schema.String }), queue: "e-delay" })
const Traced = Job.make("enqueue-request-id", { args: Schema.Struct({ label: Schema.String }), queue: "e-rid" })
const Strict = Job.make("enqueue-bad-input", {
  args: Schema.Struct({ count: Schema.Int, name: Schema.String }),
  queue: "e-bad"
})

/** The typed error of `self`; fails the test, saying what happened instead, if there is none. */
const failureOf = <A, E, R>(label: string, self: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.exit(self), (exit) =>
    exit._tag === "Failure" && exit.cause.reasons.length === 1 && exit.cause.reasons[0]!._tag === "Fail"
      ? Effect.succeed(exit.cause.reasons[0]!.error)
      : Effect.die(new Error(`${label}: expected a typed failure, got ${exit._tag === "Success" ? `success ${String(exit.value)}` : String(exit.cause)}`)))

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

const FileLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

layer(FileLayer, { excludeTestServices: true })("enqueue", (it) => {
  it.effect("enqueue returns the id of the row it wrote, args encoded with the job's Schema", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const sendAt = new Date("2030-05-06T07:08:09.010Z")
      const id = yield* jobs.enqueue(Email, { to: "ada@example.com", sendAt })
      assert.match(id, /^[1-9][0-9]*$/)
      const r = yield* row(id)
      assert.strictEqual(r.id, id)
      assert.strictEqual(r.name, "enqueue-email")
      assert.strictEqual(r.queue, "e-basic")
      assert.strictEqual(r.state, "available")
      assert.strictEqual(r.attempt, 0)
      assert.strictEqual(r.max_attempts, 25)
      assert.strictEqual(r.priority, 0)
      assert.deepStrictEqual(r.args, { to: "ada@example.com", sendAt: "2030-05-06T07:08:09.010Z" })
      assert.deepStrictEqual(r.metadata, {})
      assert.isNull(r.unique_key)
      // a second enqueue is a second row
      const other = yield* jobs.enqueue(Email, { to: "bob@example.com", sendAt })
      assert.notStrictEqual(other, id)
    }))

  it.effect("enqueueMany writes N rows in one statement and returns their ids in the order of the args", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const phones = ["+1", "+2", "+3", "+4", "+5"]
      const ids = yield* jobs.enqueueMany(Sms, phones.map((phone) => ({ phone })), { queue: "e-many", priority: 4 })
      assert.strictEqual(ids.length, 5)
      assert.strictEqual(new Set(ids).size, 5)
      const rows = yield* Effect.forEach(ids, row)
      assert.deepStrictEqual(rows.map((r) => (r.args as { phone: string }).phone), phones)
      assert.isTrue(rows.every((r) => r.queue === "e-many" && r.priority === 4 && r.state === "available"))
      // one statement: one transaction timestamp for all of them
      assert.strictEqual(new Set(rows.map((r) => r.created_at.getTime())).size, 1)
      assert.strictEqual((yield* rowsOfQueue("e-many")).length, 5)

      assert.deepStrictEqual(yield* jobs.enqueueMany(Sms, [], { queue: "e-many" }), [])
      assert.strictEqual((yield* rowsOfQueue("e-many")).length, 5)
    }))

  it.effect("enqueueAll writes jobs of several kinds, ids in the order of the entries", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const sendAt = new Date("2030-01-01T00:00:00.000Z")
      const ids = yield* jobs.enqueueAll([
        Jobs.entry(Email, { to: "a@x", sendAt }, { queue: "e-all" }),
        Jobs.entry(Sms, { phone: "+100" }, { queue: "e-all" }),
        Jobs.entry(Email, { to: "c@x", sendAt }, { queue: "e-all", priority: 9 }),
        Jobs.entry(Sms, { phone: "+200" }, { queue: "e-all-sms" })
      ])
      assert.strictEqual(ids.length, 4)
      const rows = yield* Effect.forEach(ids, row)
      assert.deepStrictEqual(
        rows.map((r) => [r.name, r.queue, r.priority, r.args]),
        [
          ["enqueue-email", "e-all", 0, { to: "a@x", sendAt: "2030-01-01T00:00:00.000Z" }],
          ["enqueue-sms", "e-all", 2, { phone: "+100" }],
          ["enqueue-email", "e-all", 9, { to: "c@x", sendAt: "2030-01-01T00:00:00.000Z" }],
          ["enqueue-sms", "e-all-sms", 2, { phone: "+200" }]
        ]
      )
      assert.strictEqual(new Set(rows.map((r) => r.created_at.getTime())).size, 1)
    }))

  it.effect("inside sql.withTransaction: a rollback leaves no job and runs nothing; a commit runs the job", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const sql = yield* SqlClient.SqlClient
      const jobs = yield* Jobs.Jobs
      const handled: Array<string> = []
      // polling every hour: only the NOTIFY sent at commit can wake the worker in time
      yield* startWorker(
        { queues: { "e-tx": { pollInterval: "1 hour" } } },
        Layer.mergeAll(Job.toLayer(Tx, (args) => Effect.sync(() => handled.push(args.label))), probe.layer)
      )

      let rolledBack = ""
      const failure = yield* sql.withTransaction(Effect.gen(function*() {
        rolledBack = yield* jobs.enqueue(Tx, { label: "rolled back" })
        // visible inside the transaction: the enqueue joined it
        assert.isTrue(yield* exists(rolledBack))
        return yield* Effect.fail("abort" as const)
      })).pipe(Effect.flip)
      assert.strictEqual(failure, "abort")
      assert.notStrictEqual(rolledBack, "")
      assert.isFalse(yield* exists(rolledBack))

      const committed = yield* sql.withTransaction(jobs.enqueue(Tx, { label: "committed" }))
      assert.strictEqual((yield* probe.next(committed))._tag, "completed")
      assert.strictEqual((yield* row(committed)).state, "completed")
      assert.deepStrictEqual(handled, ["committed"])
      assert.strictEqual(yield* countByName("enqueue-tx"), 1)
    }))

  it.effect("uniqueKey: same name and key while unfinished -> the same id and one row", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const sql = yield* SqlClient.SqlClient
      const keyCount = (key: string) =>
        Effect.map(
          sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE unique_key = ${key}`,
          (rows) => rows[0]!.n
        )

      const first = yield* jobs.enqueue(Unique, { n: 1 }, { uniqueKey: "user:42" })
      const again = yield* jobs.enqueue(Unique, { n: 2 }, { uniqueKey: "user:42" })
      assert.strictEqual(again, first)
      assert.strictEqual(yield* keyCount("user:42"), 1)
      assert.deepStrictEqual((yield* row(first)).args, { n: 1 }) // the first one's args are kept
      // another key, or the same key on another job, is another job
      const otherKey = yield* jobs.enqueue(Unique, { n: 3 }, { uniqueKey: "user:43" })
      const otherJob = yield* jobs.enqueue(UniqueTwin, { n: 4 }, { uniqueKey: "user:42" })
      assert.strictEqual(new Set([first, otherKey, otherJob]).size, 3)

      // a scheduled job holds its key too
      const scheduled = yield* jobs.enqueue(Unique, { n: 5 }, { uniqueKey: "later", delay: "1 hour" })
      assert.strictEqual((yield* row(scheduled)).state, "scheduled")
      assert.strictEqual(yield* jobs.enqueue(Unique, { n: 6 }, { uniqueKey: "later" }), scheduled)

      // within one batch
      const batch = yield* jobs.enqueueMany(Unique, [{ n: 7 }, { n: 8 }, { n: 9 }], { uniqueKey: "batch" })
      assert.strictEqual(new Set(batch).size, 1)
      assert.strictEqual(yield* keyCount("batch"), 1)

      // from 20 fibers at once
      const concurrent = yield* Effect.forEach(
        Array.from({ length: 20 }, (_, i) => i),
        (n) => jobs.enqueue(Unique, { n }, { uniqueKey: "race" }),
        { concurrency: 20 }
      )
      assert.strictEqual(concurrent.length, 20)
      assert.strictEqual(new Set(concurrent).size, 1)
      assert.strictEqual(yield* keyCount("race"), 1)
      assert.strictEqual((yield* row(concurrent[0]!)).unique_key, "race")
    }))

  it.effect("uniqueKey: once the job has completed, the key is free again", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const jobs = yield* Jobs.Jobs
      const first = yield* jobs.enqueue(UniqueFree, { n: 1 }, { uniqueKey: "free-me" })
      yield* startWorker(
        { queues: { "e-unique-free": { pollInterval: "20 millis" } } },
        Layer.mergeAll(Job.toLayer(UniqueFree, () => Effect.void), probe.layer)
      )
      assert.strictEqual((yield* probe.next(first))._tag, "completed")
      const second = yield* jobs.enqueue(UniqueFree, { n: 2 }, { uniqueKey: "free-me" })
      assert.notStrictEqual(second, first)
      assert.strictEqual((yield* row(first)).state, "completed")
      assert.deepStrictEqual((yield* row(second)).args, { n: 2 })
      assert.strictEqual((yield* probe.next(second))._tag, "completed")
    }))

  it.effect("lower priority runs first; equal priorities run in enqueue order", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const plan: ReadonlyArray<readonly [string, number]> = [
        ["a", 5],
        ["b", 0],
        ["c", 5],
        ["d", -3],
        ["e", 0],
        ["f", 5],
        ["g", -3],
        ["h", 0]
      ]
      for (const [label, priority] of plan) yield* jobs.enqueue(Ordered, { label }, { priority })
      const order: Array<string> = []
      const allDone = yield* Deferred.make<void>()
      yield* startWorker(
        { queues: { "e-prio": { concurrency: 1, pollInterval: "20 millis" } } },
        Job.toLayer(Ordered, (args) =>
          Effect.suspend(() => {
            order.push(args.label)
            return order.length === plan.length ? Deferred.succeed(allDone, undefined) : Effect.void
          }))
      )
      yield* Deferred.await(allDone)
      assert.deepStrictEqual(order, ["d", "g", "b", "e", "h", "a", "c", "f"])
    }))

  it.effect("delay and runAt -> scheduled, not run before due, run after", () => {
    const t0 = startOfNextSecond()
    return withTestClock(
      t0,
      Effect.gen(function*() {
        const probe = yield* makeProbe
        const jobs = yield* Jobs.Jobs
        const runs: Array<{ label: string; now: number }> = []
        const a = yield* jobs.enqueue(Later, { label: "a" }, { delay: "1 minute" })
        const b = yield* jobs.enqueue(Later, { label: "b" }, { runAt: new Date(t0 + 120_000) })
        // runAt wins over delay
        const c = yield* jobs.enqueue(Later, { label: "c" }, { delay: "10 seconds", runAt: new Date(t0 + 90_000) })
        // a runAt in the past: runnable now
        const d = yield* jobs.enqueue(Later, { label: "d" }, { runAt: new Date(t0 - 3_600_000) })
        // the probe: due long before the others, it proves scheduled jobs are being promoted
        const p = yield* jobs.enqueue(Later, { label: "probe" }, { delay: "5 seconds" })

        const view = (id: string) => Effect.map(row(id), (r) => [r.state, r.run_at.getTime()])
        assert.deepStrictEqual(yield* view(a), ["scheduled", t0 + 60_000])
        assert.deepStrictEqual(yield* view(b), ["scheduled", t0 + 120_000])
        assert.deepStrictEqual(yield* view(c), ["scheduled", t0 + 90_000])
        assert.deepStrictEqual(yield* view(d), ["available", t0 - 3_600_000])
        assert.deepStrictEqual(yield* view(p), ["scheduled", t0 + 5_000])

        yield* startWorker(
          { queues: { "e-delay": { pollInterval: "1 second" } }, maintenanceInterval: "200 millis" },
          Layer.mergeAll(
            Job.toLayer(Later, (args) =>
              Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => runs.push({ label: args.label, now })))),
            probe.layer
          )
        )
        // due now: runs without the clock moving
        assert.strictEqual((yield* probe.next(d))._tag, "completed")
        // move time forward, but stop short of the first due job
        assert.strictEqual(
          (yield* advanceUntil(probe.poll(p), { step: "500 millis", limit: t0 + 59_999 }))._tag,
          "completed"
        )
        assert.isAtMost(yield* Clock.currentTimeMillis, t0 + 59_999)
        for (const id of [a, b, c]) assert.strictEqual((yield* row(id)).state, "scheduled")
        assert.deepStrictEqual(runs.map((r) => r.label), ["d", "probe"])
        assert.isAtLeast(runs[1]!.now, t0 + 5_000)

        // and past each due time in turn
        for (const [id, due] of [[a, t0 + 60_000], [c, t0 + 90_000], [b, t0 + 120_000]] as const) {
          assert.strictEqual((yield* advanceUntil(probe.poll(id), { step: "500 millis" }))._tag, "completed")
          assert.isAtLeast(runs[runs.length - 1]!.now, due)
        }
        assert.deepStrictEqual(runs.map((r) => r.label), ["d", "probe", "a", "c", "b"])
      })
    )
  })

  it.effect("request id: taken from RequestId, stored, and set again in the handler; generated when absent", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const jobs = yield* Jobs.Jobs
      const seen = new Map<string, { ctx: string | undefined; ref: string | undefined; annotation: unknown }>()
      yield* startWorker(
        { queues: { "e-rid": { pollInterval: "20 millis" } } },
        Layer.mergeAll(
          Job.toLayer(Traced, (args, ctx) =>
            Effect.gen(function*() {
              const ref = yield* RequestId.RequestId
              const annotations = yield* References.CurrentLogAnnotations
              seen.set(args.label, { ctx: ctx.requestId, ref, annotation: annotations["requestId"] })
            })),
          probe.layer
        )
      )
      const given = yield* jobs.enqueue(Traced, { label: "given" }).pipe(Effect.provideService(RequestId.RequestId, "req-1"))
      const fresh1 = yield* jobs.enqueue(Traced, { label: "fresh-1" })
      const fresh2 = yield* jobs.enqueue(Traced, { label: "fresh-2" })
      for (const id of [given, fresh1, fresh2]) assert.strictEqual((yield* probe.next(id))._tag, "completed")

      assert.strictEqual((yield* row(given)).request_id, "req-1")
      assert.deepStrictEqual(seen.get("given"), { ctx: "req-1", ref: "req-1", annotation: "req-1" })

      const r1 = (yield* row(fresh1)).request_id
      const r2 = (yield* row(fresh2)).request_id
      assert.match(r1 ?? "", uuid)
      assert.match(r2 ?? "", uuid)
      assert.notStrictEqual(r1, r2)
      assert.deepStrictEqual(seen.get("fresh-1"), { ctx: r1!, ref: r1!, annotation: r1! })
      assert.deepStrictEqual(seen.get("fresh-2"), { ctx: r2!, ref: r2!, annotation: r2! })
    }))

  it.effect("args the Schema rejects -> InvalidJobArgs, nothing written (NUL in a string too)", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const notInt = yield* failureOf("bad input", jobs.enqueue(Strict, { count: 1.5, name: "x" }))
      assert.instanceOf(notInt, InvalidJobArgs)
      assert.strictEqual(notInt._tag, "InvalidJobArgs")
      assert.strictEqual((notInt as InvalidJobArgs).job, "enqueue-bad-input")

      const nul = yield* failureOf("bad input", jobs.enqueue(Strict, { count: 1, name: "a\u0000b" }))
      assert.instanceOf(nul, InvalidJobArgs)
      assert.include(nul.message, "NUL")

      // one bad entry spoils the batch: nothing of it is written
      const batch = yield* failureOf("bad input", jobs.enqueueMany(Strict, [{ count: 1, name: "ok" }, { count: 2.5, name: "bad" }]))
      assert.instanceOf(batch, InvalidJobArgs)
      const mixed = yield* failureOf("bad input", jobs.enqueueAll([
        Jobs.entry(Strict, { count: 1, name: "ok" }),
        Jobs.entry(Strict, { count: 1, name: "\u0000" })
      ]))
      assert.instanceOf(mixed, InvalidJobArgs)

      assert.strictEqual(yield* countByName("enqueue-bad-input"), 0)
    }))

  it.effect("bad options -> InvalidJobOptions, nothing written", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const cases: ReadonlyArray<readonly [string, Jobs.EnqueueOptions]> = [
        ["negative delay (number)", { delay: -1000 }],
        ["negative delay (string)", { delay: "-5 seconds" }],
        ["infinite delay", { delay: Infinity }],
        ["NaN delay", { delay: Number.NaN }],
        ["unparseable delay", { delay: "soon" as unknown as Jobs.EnqueueOptions["delay"] }],
        ["fractional priority", { priority: 1.5 }],
        ["priority out of smallint range", { priority: 40_000 }],
        ["maxAttempts 0", { maxAttempts: 0 }],
        ["negative maxAttempts", { maxAttempts: -2 }],
        ["empty queue name", { queue: "" }],
        ["NUL in queue name", { queue: "a\u0000b" }],
        ["NUL in uniqueKey", { uniqueKey: "key\u0000" }],
        ["invalid Date runAt", { runAt: new Date(Number.NaN) }],
        ["runAt out of range", { runAt: new Date(8.64e15) }],
        ["NUL in metadata", { metadata: { note: "\u0000" } }],
        ["metadata that is not JSON", { metadata: { big: 1n } }]
      ]
      for (const [label, options] of cases) {
        const error = yield* failureOf(label, jobs.enqueue(Strict, { count: 1, name: label }, options))
        assert.instanceOf(error, InvalidJobOptions, label)
        assert.strictEqual(error._tag, "InvalidJobOptions", label)
        assert.strictEqual((error as InvalidJobOptions).job, "enqueue-bad-input", label)
        assert.strictEqual(yield* countByName("enqueue-bad-input"), 0, label)
      }
      // the same in a batch
      const batch = yield* failureOf("bad input", jobs.enqueueMany(Strict, [{ count: 1, name: "a" }, { count: 2, name: "b" }], { priority: 0.5 }))
      assert.instanceOf(batch, InvalidJobOptions)
      assert.strictEqual(yield* countByName("enqueue-bad-input"), 0)
      // and a valid one still goes in
      yield* jobs.enqueue(Strict, { count: 1, name: "fine" })
      assert.strictEqual(yield* countByName("enqueue-bad-input"), 1)
    }))
})
