/**
 * Live controls on a running worker: replacing its queue configs under load
 * (jobs keep flowing, each runs once), changing a queue's concurrency, pausing
 * and resuming a queue on one worker and for all workers (seen by each within
 * one poll interval), and bad settings refused with InvalidWorkerConfig.
 */
import { assert, expect, layer } from "@effect/vitest"
import { Clock, Context, Deferred, Effect, Exit, Latch, Layer, Option, Queue, Schema } from "effect"
import { InvalidWorkerConfig, Job, Jobs, JobsAdmin, Observer, Worker } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { countByState, startWorker } from "./support/harness.ts"
import { advanceUntil, makeProbe, row, startOfNextSecond, withTestClock } from "./support/probes.ts"
import * as WorkerConfig from "../src/internal/worker/Config.ts"

const TestLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer).pipe(Layer.provideMerge(TestDb.layer()))

const workerOf = (context: Context.Context<Worker.Worker>) => Context.get(context, Worker.Worker)

/** Advances the TestClock by `ms` in small steps, letting the database round trips land between them. */
const advanceFor = (ms: number) =>
  Effect.flatMap(Clock.currentTimeMillis, (start) =>
    advanceUntil(Effect.map(Clock.currentTimeMillis, (now) => (now >= start + ms ? Option.some(now) : Option.none())), {
      limit: start + ms
    }))

/**
 * Waits (advancing the TestClock in 10 ms steps, never beyond `limit`) until the worker's status
 * of `queue` satisfies `f`. The control poll's next wait starts when its SQL returns, from
 * wherever the clock is by then: small steps, and a limit with headroom, keep a slow statement
 * from pushing that poll past `limit` (see `advanceUntil`).
 */
const statusUntil = (worker: Worker.Worker["Service"], queue: string, f: (s: Worker.QueueStatus) => boolean, limit: number) =>
  advanceUntil(
    Effect.map(worker.status, (all) => Option.filter(Option.fromNullishOr(all.find((s) => s.name === queue)), f)),
    { step: "10 millis", limit }
  )

/**
 * A queue `queue` paused for all workers with 20 jobs of `P` waiting in it, and a handler of `P`
 * that counts its runs per job: `allRan` completes once each job ran.
 */
const pausedQueueWithJobs = (queue: string) =>
  Effect.gen(function*() {
    const P = Job.make(queue, { args: Schema.Struct({ i: Schema.Number }), queue })
    const admin = yield* JobsAdmin.JobsAdmin
    yield* admin.pause(queue)
    const ids = yield* (yield* Jobs.Jobs).enqueueMany(P, Array.from({ length: 20 }, (_, i) => ({ i })))
    const runs = new Map<string, number>()
    const allRan = yield* Deferred.make<void>()
    const handler = Job.toLayer(P, (_args, ctx) =>
      Effect.suspend(() => {
        runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1)
        return runs.size === ids.length ? Deferred.succeed(allRan, undefined) : Effect.void
      }))
    /** None of the jobs claimed or run; then resumed, each runs once. */
    const untouchedThenRunOnce = Effect.gen(function*() {
      for (const id of ids) assert.strictEqual((yield* row(id)).state, "available", `job ${id} is not claimed`)
      assert.strictEqual(runs.size, 0, "no job of the paused queue ran")
      // Resumed: the next control poll reads it (within a poll interval), and every job runs once.
      yield* admin.resume(queue)
      yield* Deferred.await(allRan)
      for (const n of runs.values()) assert.strictEqual(n, 1)
    })
    return { handler, untouchedThenRunOnce }
  })

layer(TestLayer, { excludeTestServices: true })("live controls", (it) => {
  it.effect("reconfigure under load: queues come and go, jobs keep flowing, each runs exactly once", () =>
    Effect.gen(function*() {
      const A = Job.make("lc-a", { args: Schema.Struct({ i: Schema.Number }), queue: "lc-a" })
      const B = Job.make("lc-b", { args: Schema.Struct({ i: Schema.Number }), queue: "lc-b" })
      const runs = new Map<string, number>()
      const log: Array<string> = []
      const run = (queue: string) => (_args: { readonly i: number }, ctx: Job.JobContext) =>
        Effect.gen(function*() {
          runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1)
          log.push(`start ${queue}`)
          for (let i = 0; i < 3; i++) yield* Effect.yieldNow
        })
      const total = 600
      let completed = 0
      const allDone = yield* Deferred.make<void>()
      const counting = Observer.replace({
        ...Observer.noop,
        completed: () => Effect.suspend(() => (++completed === total ? Deferred.succeed(allDone, undefined) : Effect.void))
      })
      const worker = workerOf(
        yield* startWorker(
          { queues: { "lc-a": { concurrency: 2 } }, pruner: false },
          Layer.mergeAll(Job.toLayer(A, run("lc-a")), Job.toLayer(B, run("lc-b")), counting)
        )
      )
      const jobs = yield* Jobs.Jobs
      let next = 0
      const batch = (n: number) =>
        Effect.gen(function*() {
          const args = Array.from({ length: n }, () => ({ i: next++ }))
          yield* jobs.enqueueMany(A, args)
          yield* jobs.enqueueMany(B, args)
        })

      yield* batch(60)
      yield* worker.reconfigure({ "lc-a": { concurrency: 4 }, "lc-b": { concurrency: 2 } }) // b added, a changed in place
      yield* batch(60)
      yield* worker.reconfigure({ "lc-b": { concurrency: 3 } }) // a removed: its producer stops
      log.push("a removed")
      yield* batch(60)
      log.push("a added back")
      yield* worker.reconfigure({ "lc-a": { concurrency: 1, prefetch: 0 }, "lc-b": { concurrency: 1 } })
      yield* batch(60)
      yield* worker.reconfigure({ "lc-a": { concurrency: 8 }, "lc-b": { concurrency: 8, pollInterval: "50 millis" } })
      yield* batch(60)
      yield* Deferred.await(allDone)

      assert.strictEqual(runs.size, total)
      for (const [id, n] of runs) assert.strictEqual(n, 1, `job ${id} ran once`)
      const removedWindow = log.slice(log.indexOf("a removed"), log.indexOf("a added back"))
      assert.notInclude(removedWindow, "start lc-a", "no lc-a job starts while lc-a is not served")
      assert.deepStrictEqual(yield* countByState("lc-a"), { completed: total / 2 })
      assert.deepStrictEqual(yield* countByState("lc-b"), { completed: total / 2 })
      const status = yield* worker.status
      assert.deepStrictEqual(status.map((s) => [s.name, s.concurrency, s.pollIntervalMillis]).sort(), [
        ["lc-a", 8, 1000],
        ["lc-b", 8, 50]
      ])
    }), { timeout: 60_000 })

  it.effect("setConcurrency raises and lowers a queue's concurrency while it runs", () =>
    Effect.gen(function*() {
      const C = Job.make("lc-conc", { args: Schema.Struct({ i: Schema.Number }), queue: "lc-conc" })
      const started = yield* Queue.unbounded<number>()
      const gate = yield* Latch.make(false)
      let active = 0
      let lowered = false
      const activeAtStartAfterLowering: Array<number> = []
      const worker = workerOf(
        yield* startWorker(
          { queues: { "lc-conc": { concurrency: 1, prefetch: 0 } }, pruner: false },
          Job.toLayer(C, (args) =>
            Effect.gen(function*() {
              active++
              if (lowered) activeAtStartAfterLowering.push(active)
              yield* Queue.offer(started, args.i)
              yield* gate.await
            }).pipe(Effect.ensuring(Effect.sync(() => active--))))
        )
      )
      const ids = yield* (yield* Jobs.Jobs).enqueueMany(C, [0, 1, 2, 3, 4].map((i) => ({ i })))
      yield* Queue.take(started)
      assert.strictEqual((yield* worker.status)[0]?.running, 1)

      yield* worker.setConcurrency("lc-conc", 3)
      yield* Queue.take(started)
      yield* Queue.take(started)
      assert.strictEqual(active, 3, "three at once after raising it to 3")
      assert.strictEqual((yield* worker.status)[0]?.concurrency, 3)

      yield* worker.setConcurrency("lc-conc", 1)
      lowered = true
      yield* gate.open // the three running finish; the last two run one at a time
      yield* Queue.take(started)
      yield* Queue.take(started)
      assert.deepStrictEqual(activeAtStartAfterLowering, [1, 1])
      for (const id of ids) {
        let r = yield* row(id)
        while (r.state !== "completed") r = yield* Effect.andThen(Effect.yieldNow, row(id))
      }

      // Bad settings change nothing and say what is wrong.
      for (const bad of [0, -1, 1.5, 100_000]) {
        const error = yield* Effect.flip(worker.setConcurrency("lc-conc", bad))
        expect(error).toBeInstanceOf(InvalidWorkerConfig)
        expect(error.message).toContain("concurrency must be an integer")
      }
      expect((yield* Effect.flip(worker.setConcurrency("nope", 2))).message).toContain("not served")
      expect((yield* Effect.flip(worker.reconfigure({}))).message).toContain("at least one queue")
      expect((yield* Effect.flip(worker.reconfigure({ "lc-conc": { concurrency: -3 } }))).message).toContain("concurrency")
      assert.strictEqual((yield* worker.status)[0]?.concurrency, 1, "unchanged")
    }))

  it.effect("a negative concurrency is refused when the worker is configured", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Layer.build(Worker.layer({ queues: { q: { concurrency: -1 } } })))
      assert.isTrue(Exit.isFailure(exit))
      const error = yield* Effect.flip(WorkerConfig.validate({ queues: { q: { concurrency: -1 } } }))
      expect(error.message).toBe(`queue "q": concurrency must be an integer in [1, 10000], got -1`)
      const pruner = yield* Effect.flip(Layer.build(Worker.layer({ queues: { q: {} }, pruner: { interval: -1 } })))
      expect(pruner).toBeInstanceOf(InvalidWorkerConfig)
      expect(pruner.message).toContain("pruner: interval")
    }))

  it.effect("pause and resume a queue on one worker: nothing is claimed while paused", () =>
    withTestClock(
      startOfNextSecond(),
      Effect.gen(function*() {
        const P = Job.make("lc-pause", { args: Schema.Struct({}), queue: "lc-pause" })
        const probe = yield* makeProbe
        let resumed = false
        const startedAfterResume = yield* Deferred.make<boolean>()
        const worker = workerOf(
          yield* startWorker(
            { queues: { "lc-pause": {} }, maintenanceInterval: "100 millis", pruner: false },
            Layer.mergeAll(Job.toLayer(P, () => Deferred.succeed(startedAfterResume, resumed)), probe.layer)
          )
        )
        yield* worker.pause("lc-pause")
        assert.isTrue((yield* worker.status)[0]?.pausedLocally)
        const id = yield* (yield* Jobs.Jobs).enqueue(P, {})
        yield* advanceFor(5000) // five poll intervals (and the NOTIFY): the worker looks, and must not claim
        assert.strictEqual((yield* row(id)).state, "available")
        assert.isFalse(yield* Deferred.isDone(startedAfterResume))

        resumed = true
        yield* worker.resume("lc-pause")
        assert.isTrue(yield* Deferred.await(startedAfterResume), "it ran only after resume")
        assert.strictEqual((yield* probe.next(id))._tag, "completed")
        expect((yield* Effect.flip(worker.pause("not-served"))).message).toContain("not served")
      })
    ))

  it.effect("a worker started while its queue is paused for all workers claims none of its jobs", () =>
    Effect.gen(function*() {
      // Before the fix, the producers started claiming before the first control poll had read
      // the pause flags: the new worker's first claim took the paused queue's jobs.
      const { handler, untouchedThenRunOnce } = yield* pausedQueueWithJobs("lc-paused-start")
      const worker = workerOf(yield* startWorker({ queues: { "lc-paused-start": {} }, pruner: false }, handler))
      assert.isTrue((yield* worker.status)[0]?.pausedGlobally, "the flag is read before the worker claims")
      yield* worker.wake
      yield* untouchedThenRunOnce
    }))

  it.effect("a queue added by reconfigure while it is paused for all workers: none of its jobs is claimed", () =>
    Effect.gen(function*() {
      const A = Job.make("lc-served", { args: Schema.Struct({}), queue: "lc-served" })
      const { handler, untouchedThenRunOnce } = yield* pausedQueueWithJobs("lc-paused-added")
      const worker = workerOf(
        yield* startWorker({ queues: { "lc-served": {} }, pruner: false }, Layer.mergeAll(Job.toLayer(A, () => Effect.void), handler))
      )
      yield* worker.reconfigure({ "lc-served": {}, "lc-paused-added": {} })
      const added = (yield* worker.status).find((s) => s.name === "lc-paused-added")
      assert.isTrue(added?.pausedGlobally, "the flag is read before the added queue's first claim")
      yield* worker.wake
      yield* untouchedThenRunOnce
    }))

  it.effect("pause for all workers: another worker sees it within one poll interval; resume likewise", () => {
    const start = startOfNextSecond()
    return withTestClock(
      start,
      Effect.gen(function*() {
        const G = Job.make("lc-global", { args: Schema.Struct({ i: Schema.Number }), queue: "lc-global" })
        const probe = yield* makeProbe
        const runs = new Map<string, number>()
        const handler = Job.toLayer(G, (_args, ctx) => Effect.sync(() => void runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1)))
        const options: Worker.Options = {
          queues: { "lc-global": { pollInterval: "1 second" } },
          maintenanceInterval: "1 second",
          pruner: false
        }
        const a = workerOf(yield* startWorker(options, Layer.mergeAll(handler, probe.layer)))
        const b = workerOf(yield* startWorker(options, Layer.mergeAll(handler, probe.layer)))

        yield* a.pause("lc-global", { global: true })
        assert.isTrue((yield* a.status)[0]?.pausedGlobally, "the worker that paused sees it at once")
        const t0 = yield* Clock.currentTimeMillis
        // One poll interval with its 10 % jitter is 1100 ms. But b's poll may be in flight when the
        // pause lands (and read the flag before it); its next wait starts when that poll's SQL
        // returns, the clock having moved meanwhile: a second interval of headroom.
        yield* statusUntil(b, "lc-global", (s) => s.pausedGlobally, t0 + 2200)
        assert.isTrue((yield* Effect.flatMap(JobsAdmin.JobsAdmin, (admin) => admin.queues)).find((q) => q.name === "lc-global")?.paused)

        const ids = yield* (yield* Jobs.Jobs).enqueueMany(G, [1, 2, 3, 4].map((i) => ({ i })))
        yield* advanceFor(3000)
        assert.strictEqual(runs.size, 0, "no worker claims a paused queue")
        for (const id of ids) assert.strictEqual((yield* row(id)).state, "available")

        yield* b.resume("lc-global", { global: true })
        const t1 = yield* Clock.currentTimeMillis
        yield* statusUntil(a, "lc-global", (s) => !s.pausedGlobally, t1 + 2200) // likewise
        for (const id of ids) assert.strictEqual((yield* probe.next(id))._tag, "completed")
        assert.strictEqual(runs.size, 4)
        for (const n of runs.values()) assert.strictEqual(n, 1)
      })
    )
  })
})
