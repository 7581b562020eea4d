/**
 * Priorities that hold with a buffer: a job that arrives with a better priority than the jobs
 * a worker has claimed ahead (its buffer) starts before those, rather than after the buffer
 * has drained; the buffered jobs it displaces go back to the queue with their attempt, in
 * their place in line.
 */
import { assert, describe, it as unit, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Layer, Option, Queue, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs, Worker } from "../src/index.ts"
import { ClaimBuffer } from "../src/internal/worker/ClaimBuffer.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { waitFor } from "./support/probes.ts"

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

const Args = Schema.Struct({ label: Schema.String })
const Low = Job.make("prio-low", { args: Args, queue: "prio", priority: 5 })
const High = Job.make("prio-high", { args: Args, queue: "prio", priority: 0 })

layer(TestLayer, { excludeTestServices: true })("priority with a buffer", (it) => {
  it.effect("better jobs enqueued behind a full buffer of worse ones start before the buffered ones", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const jobs = yield* Jobs.Jobs
      const starts = yield* Queue.unbounded<string>()
      const release = yield* Deferred.make<void>()
      // The low-priority handlers hold until released: two run, four wait in the buffer (full:
      // concurrency 2 + prefetch 4), two more wait in the table.
      const handlers = Layer.merge(
        Job.toLayer(Low, ({ label }) => Queue.offer(starts, label).pipe(Effect.andThen(Deferred.await(release)))),
        Job.toLayer(High, ({ label }) => Queue.offer(starts, label).pipe(Effect.asVoid))
      )
      const lows = yield* jobs.enqueueMany(Low, ["L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8"].map((label) => ({ label })))
      const before = new Map(
        (yield* sql<{ id: string; run_at: Date }>`SELECT id::text, run_at FROM effect_jobs.jobs WHERE queue = 'prio'`)
          .map((r) => [r.id, r.run_at.getTime()])
      )
      const context = yield* startWorker(
        { queues: { prio: { concurrency: 2, prefetch: 4, pollInterval: "1 hour" } }, pruner: false },
        handlers
      )
      const first = [yield* Queue.take(starts), yield* Queue.take(starts)]
      assert.sameMembers(first, ["L1", "L2"])
      const [queueStatus] = yield* Context.get(context, Worker.Worker).status
      assert.strictEqual(queueStatus?.buffered, 4, "the buffer is full")

      const highs = yield* jobs.enqueueMany(High, [{ label: "H1" }, { label: "H2" }])
      // Claimed by the worker although its buffer was full (before the change they stayed
      // `available` until the buffer had drained to half).
      yield* waitFor("the high-priority jobs claimed", Effect.map(
        sql<{ n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs
                           WHERE id = ANY(${highs.map(Number)}::bigint[]) AND state = 'running'`,
        (rows) => rows[0]!.n === 2 ? Option.some(true) : Option.none()
      ), { timeout: "10 seconds" })
      // Two buffered low-priority jobs were given back: available again (once their outcome is
      // written), attempt not spent, their run time (place in line) unchanged.
      const givenBack = yield* waitFor("two buffered low-priority jobs given back", Effect.map(
        sql<{ id: string; attempt: number; run_at: Date; errors: ReadonlyArray<unknown> }>`
          SELECT id::text, attempt, run_at, errors FROM effect_jobs.jobs
          WHERE id = ANY(${lows.slice(0, 6).map(Number)}::bigint[]) AND state = 'available'`,
        (rows) => rows.length === 2 ? Option.some(rows) : Option.none()
      ), { timeout: "10 seconds" })
      // the last two in line: the last claimed of the worst priority
      assert.sameMembers(givenBack.map((r) => r.id), lows.slice(4, 6))
      for (const r of givenBack) {
        assert.strictEqual(r.attempt, 0)
        assert.deepStrictEqual(r.errors, [])
        assert.strictEqual(r.run_at.getTime(), before.get(r.id))
      }

      yield* Deferred.succeed(release, undefined)
      const rest: Array<string> = []
      for (let i = 0; i < 8; i++) rest.push(yield* Queue.take(starts))
      // Both high-priority jobs start at the next two free slots, before every buffered low
      // one; the two given back kept their place, ahead of L7 and L8 enqueued with them.
      assert.sameMembers(rest.slice(0, 2), ["H1", "H2"])
      assert.deepStrictEqual(rest.slice(2), ["L3", "L4", "L5", "L6", "L7", "L8"])
      yield* waitFor("every job completed", Effect.map(
        sql<{ n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE queue = 'prio' AND state <> 'completed'`,
        (rows) => rows[0]!.n === 0 ? Option.some(true) : Option.none()
      ))
      const attempts = yield* sql<{ attempt: number }>`SELECT attempt FROM effect_jobs.jobs WHERE queue = 'prio'`
      assert.isTrue(attempts.every((r) => r.attempt === 1), "each job ran once, on its first attempt")
    }))
})

describe("ClaimBuffer", () => {
  const item = (priority: number, label: string) => ({ priority, label })
  const make = () => new ClaimBuffer<{ priority: number; label: string }>((a) => a.priority)

  unit("starts by priority, then in claim order", () => {
    const b = make()
    for (const a of [item(5, "a"), item(5, "b"), item(0, "c"), item(9, "d"), item(0, "e"), item(5, "f")]) b.push(a)
    assert.strictEqual(b.length, 6)
    assert.strictEqual(b.worst(), 9)
    assert.strictEqual(b.worstCount(), 1)
    const order: Array<string> = []
    for (let a = b.shift(); a !== undefined; a = b.shift()) order.push(a.label)
    assert.deepStrictEqual(order, ["c", "e", "a", "b", "f", "d"])
    assert.strictEqual(b.length, 0)
    assert.strictEqual(b.worst(), undefined)
  })

  unit("popWorst takes the last claimed of the worst priority only; remove and takeAll", () => {
    const b = make()
    const c = item(1, "c")
    for (const a of [item(1, "a"), item(7, "x"), item(7, "y"), c, item(7, "z")]) b.push(a)
    assert.deepStrictEqual(b.popWorst(5).map((a) => a.label), ["z", "y", "x"])
    assert.strictEqual(b.worst(), 1)
    assert.isTrue(b.remove(c))
    assert.isFalse(b.remove(c))
    assert.deepStrictEqual(b.takeAll().map((a) => a.label), ["a"])
    assert.strictEqual(b.length, 0)
  })
})
