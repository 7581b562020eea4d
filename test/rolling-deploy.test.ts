/**
 * Safe rolling deploys: a worker claims only the jobs it has handlers for (their aliases
 * included), so a job that only newer workers know waits for them instead of going dead
 * on an older one.
 */
import { assert, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { InvalidWorkerConfig, Job, Jobs, Observer } from "../src/index.ts"
import { JobStore } from "../src/internal/Store.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { makeProbe, row, rowsOfQueue } from "./support/probes.ts"

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

const A = Job.make("rd-a", { args: Schema.Struct({ i: Schema.Number }), queue: "rd-mixed", retention: "1 hour" })
const B = Job.make("rd-b", { args: Schema.Struct({ i: Schema.Number }), queue: "rd-mixed", retention: "1 hour" })

// The job before and after a rename: rows enqueued as "rd-sendEmail" are run by "rd-send-email".
const OldSendEmail = Job.make("rd-sendEmail", { args: Schema.Struct({ to: Schema.String }), queue: "rd-alias" })
const SendEmail = Job.make("rd-send-email", {
  args: Schema.Struct({ to: Schema.String }),
  queue: "rd-alias",
  aliases: ["rd-sendEmail", "rd-send_email"]
})

/** Rows of a queue by name and state, e.g. `{ "rd-a/completed": 10 }`. */
const census = (queue: string) =>
  Effect.map(rowsOfQueue(queue), (rows) => {
    const counts: Record<string, number> = {}
    for (const r of rows) counts[`${r.name}/${r.state}`] = (counts[`${r.name}/${r.state}`] ?? 0) + 1
    return counts
  })

layer(TestLayer, { excludeTestServices: true })("rolling deploys", (it) => {
  it.effect("(a) an old worker without B's handler leaves B to the new worker; every job completes, none dead", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const ranOn = new Map<string, Array<string>>()
      const dead: Array<string> = []
      // Finished runs (completed or dead), and the count at which the current phase ends.
      let finished = 0
      let target = 0
      let phaseDone = yield* Deferred.make<void>()
      const observer = Layer.fresh(Observer.add({
        ...Observer.noop,
        completed: () => Effect.suspend(() => (++finished === target ? Deferred.succeed(phaseDone, undefined) : Effect.void)),
        dead: (job) =>
          Effect.suspend(() => {
            dead.push(`${job.name} ${job.id}`)
            return ++finished === target ? Deferred.succeed(phaseDone, undefined) : Effect.void
          })
      }))
      const handler = <J extends typeof A | typeof B>(job: J, worker: string) =>
        Job.toLayer(job, (_args, ctx) =>
          Effect.sync(() => {
            ranOn.set(ctx.id, [...(ranOn.get(ctx.id) ?? []), worker])
          }))
      /** B and A interleaved, a B first, so that the old worker meets B jobs ahead of every A. */
      const enqueueMixed = (rounds: number, per: number, from: number) =>
        Effect.gen(function*() {
          const a: Array<string> = []
          const b: Array<string> = []
          for (let r = 0; r < rounds; r++) {
            const args = Array.from({ length: per }, (_, i) => ({ i: from + r * per + i }))
            b.push(...(yield* jobs.enqueueMany(B, args)))
            a.push(...(yield* jobs.enqueueMany(A, args)))
          }
          return { a, b }
        })

      // Phase 1: only the old worker (it has A's handler, not B's).
      const first = yield* enqueueMixed(10, 20, 0)
      target = first.a.length
      yield* startWorker(
        { queues: { "rd-mixed": { concurrency: 8 } }, workerId: "old" },
        Layer.mergeAll(handler(A, "old"), observer, Layer.fresh(TestDb.pool({ maxConnections: 5 })))
      )
      yield* Deferred.await(phaseDone)
      // Every A completed, so every claim of the old worker passed over the B jobs ahead of them:
      // untouched, still available with no attempt spent.
      assert.deepStrictEqual(dead, [])
      assert.deepStrictEqual(yield* census("rd-mixed"), { "rd-a/completed": 200, "rd-b/available": 200 })
      for (const id of first.b) {
        const r = yield* row(id)
        assert.strictEqual(r.attempt, 0)
      }

      // Phase 2: the new worker (both handlers) joins, side by side with the old one, and more of both arrive.
      phaseDone = yield* Deferred.make<void>()
      finished = 0
      target = first.b.length + 400
      yield* startWorker(
        { queues: { "rd-mixed": { concurrency: 8 } }, workerId: "new" },
        Layer.mergeAll(handler(A, "new"), handler(B, "new"), observer, Layer.fresh(TestDb.pool({ maxConnections: 5 })))
      )
      const second = yield* enqueueMixed(10, 20, 1000)
      yield* Deferred.await(phaseDone)

      assert.deepStrictEqual(dead, [])
      assert.deepStrictEqual(yield* census("rd-mixed"), { "rd-a/completed": 400, "rd-b/completed": 400 })
      for (const id of [...first.b, ...second.b]) assert.deepStrictEqual(ranOn.get(id), ["new"], `B job ${id}`)
      for (const id of [...first.a, ...second.a]) assert.lengthOf(ranOn.get(id) ?? [], 1, `A job ${id} ran once`)
      for (const id of first.a) assert.deepStrictEqual(ranOn.get(id), ["old"])
    }), { timeout: 60_000 })

  it.effect("(b) rows stored under a former name are run by the renamed job's handler; ctx.name is the stored name", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const sql = yield* SqlClient.SqlClient
      const probe = yield* makeProbe
      const seen = new Map<string, { name: string; to: string }>()
      const old = yield* jobs.enqueueMany(OldSendEmail, [{ to: "a@x" }, { to: "b@x" }])
      const [raw] = yield* sql<{ readonly id: string }>`
        INSERT INTO effect_jobs.jobs (name, queue, args) VALUES ('rd-send_email', 'rd-alias', '{"to":"c@x"}')
        RETURNING id::text`
      const current = yield* jobs.enqueue(SendEmail, { to: "d@x" })
      yield* startWorker(
        { queues: { "rd-alias": {} } },
        Layer.mergeAll(
          Job.toLayer(SendEmail, (args, ctx) =>
            Effect.sync(() => {
              seen.set(ctx.id, { name: ctx.name, to: args.to })
            })),
          probe.layer
        )
      )
      const ids = [...old, raw!.id, current]
      for (const id of ids) assert.strictEqual((yield* probe.next(id))._tag, "completed", `job ${id}`)
      assert.deepStrictEqual(ids.map((id) => seen.get(id)), [
        { name: "rd-sendEmail", to: "a@x" },
        { name: "rd-sendEmail", to: "b@x" },
        { name: "rd-send_email", to: "c@x" },
        { name: "rd-send-email", to: "d@x" }
      ])
      for (const id of ids) {
        const r = yield* row(id)
        assert.strictEqual(r.state, "completed")
        assert.strictEqual(r.attempt, 1)
      }
      assert.deepStrictEqual(probe.workerErrors, [])
    }))

  it("(c) a bad alias is refused when the job is defined", () => {
    const args = Schema.Struct({})
    expect(() => Job.make("rd-bad", { args, aliases: [""] })).toThrow(/alias/)
    expect(() => Job.make("rd-bad", { args, aliases: ["x".repeat(256)] })).toThrow(/alias/)
    expect(() => Job.make("rd-bad", { args, aliases: ["a\u0000b"] })).toThrow(/alias/)
    expect(() => Job.make("rd-bad", { args, aliases: ["\ud800"] })).toThrow(/alias/)
    expect(() => Job.make("rd-bad", { args, aliases: ["rd-bad"] })).toThrow(/repeats the name/)
    expect(() => Job.make("rd-bad", { args, aliases: ["old", "old"] })).toThrow(/repeats/)
    expect(() => Job.make("rd-bad", { args, aliases: [1 as unknown as string] })).toThrow(/alias/)
    assert.deepStrictEqual(Job.make("rd-good", { args, aliases: ["x".repeat(255)] }).aliases, ["x".repeat(255)])
    assert.deepStrictEqual(Job.make("rd-good", { args }).aliases, [])
  })

  it.effect("(c) two handlers answering to one name on a worker: InvalidWorkerConfig when the worker is built", () =>
    Effect.gen(function*() {
      const args = Schema.Struct({})
      const X = Job.make("rd-x", { args, aliases: ["rd-shared"] })
      const Y = Job.make("rd-y", { args, aliases: ["rd-shared"] })
      const Z = Job.make("rd-z", { args, aliases: ["rd-x"] }) // another job's name
      for (const handlers of [[X, Y], [X, Z]] as const) {
        const e = yield* Effect.flip(Effect.scoped(startWorker(
          { queues: { "rd-conflict": {} } },
          Layer.mergeAll(...handlers.map((j) => Job.toLayer(j, () => Effect.void)) as [Layer.Layer<any>])
        )))
        expect(e).toBeInstanceOf(InvalidWorkerConfig)
        expect((e as InvalidWorkerConfig).message).toContain(handlers[1].aliases[0])
      }
    }))

  it.effect("(d) the claim takes only the names given: none of them -> nothing claimed, rows untouched", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* JobStore
      yield* sql`INSERT INTO effect_jobs.jobs (name, queue, args)
                 SELECT 'rd-unknown-' || i, 'rd-store', '{}' FROM generate_series(1, 5) AS i`
      const claim = (names: ReadonlyArray<string>) =>
        store.jobClaim({ queue: "rd-store", limit: 10, now: Date.now() + 1000, leaseMillis: 60_000, workerId: "t", names })
      assert.lengthOf(yield* claim([]), 0)
      assert.lengthOf(yield* claim(["rd-a", "rd-b", "rd-unknown-\"quoted\\", "rd-unknown-1,rd-unknown-2"]), 0)
      for (const r of yield* rowsOfQueue("rd-store")) {
        assert.strictEqual(r.state, "available")
        assert.strictEqual(r.attempt, 0)
      }
      // ... and exactly those given (the names survive the array literal they travel in)
      const claimed = yield* claim(["rd-unknown-2", "rd-unknown-4"])
      assert.deepStrictEqual(claimed.map((r) => r.name).sort(), ["rd-unknown-2", "rd-unknown-4"])
    }).pipe(Effect.provide(JobStore.layer)))

  it.effect("(d) a worker with no handler for the queue's jobs claims none of them: they stay available, attempt 0", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const probe = yield* makeProbe
      yield* sql`INSERT INTO effect_jobs.jobs (name, queue, args, priority)
                 SELECT 'rd-nobody-' || (i % 3), 'rd-none', '{}', 0 FROM generate_series(1, 30) AS i`
      // A job the worker can run, behind all of them (a lower priority): once it has completed,
      // the worker's claims have passed over every job ahead of it.
      const marker = yield* (yield* Jobs.Jobs).enqueue(A, { i: 0 }, { queue: "rd-none", priority: 10 })
      yield* startWorker(
        { queues: { "rd-none": { concurrency: 4 } } },
        Layer.mergeAll(Job.toLayer(A, () => Effect.void), probe.layer)
      )
      assert.strictEqual((yield* probe.next(marker))._tag, "completed")
      const rows = (yield* rowsOfQueue("rd-none")).filter((r) => r.id !== marker)
      assert.lengthOf(rows, 30)
      for (const r of rows) {
        assert.strictEqual(r.state, "available")
        assert.strictEqual(r.attempt, 0)
        assert.deepStrictEqual(r.errors, [])
      }
      assert.deepStrictEqual(probe.workerErrors, [])
    }))
})
