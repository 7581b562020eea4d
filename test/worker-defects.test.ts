/**
 * Defects of the worker's engine (issue 14, part 2), each with a test that fails on the
 * code before its fix. The races are driven through the database's state (a lease taken
 * away by hand, as the rescuer would; a claim held by an advisory lock in a trigger) and
 * Deferreds, not by timing.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Layer, Queue, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs, Observer, Worker } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { getJob, startWorker } from "./support/harness.ts"

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

/** What the rescuer does to a job whose lease lapsed: back to `available`, no longer held by anyone. */
const takeAway = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`UPDATE effect_jobs.jobs SET state = 'available', run_at = now(), lease_expires_at = NULL, locked_by = NULL
        WHERE id = ${id}::bigint AND state = 'running'`).pipe(Effect.orDie)

/**
 * An observer that reports, per job id, that the worker found its lease lost, and the
 * jobs it completed (in order).
 */
const makeWatcher = Effect.gen(function*() {
  const lost = new Map<string, Deferred.Deferred<void>>()
  const lostOf = (id: string) => {
    let d = lost.get(id)
    if (d === undefined) lost.set(id, d = Deferred.makeUnsafe<void>())
    return d
  }
  const completed = yield* Queue.unbounded<string>()
  const layer = Observer.replace({
    ...Observer.noop,
    completed: (job) => Queue.offer(completed, job.id).pipe(Effect.asVoid),
    workerError: (_queue, message) => {
      const m = /^lost the lease of job (\d+)/.exec(message)
      return m === null ? Effect.void : Deferred.succeed(lostOf(m[1]!), undefined).pipe(Effect.asVoid)
    }
  })
  return {
    layer,
    /** Waits until the worker found the lease of `id` lost (at its heartbeat). */
    awaitLost: (id: string) => Deferred.await(lostOf(id)),
    /** Waits for the next job the worker reported completed. */
    nextCompleted: Queue.take(completed)
  }
})

const leases: Partial<Worker.Options> = { lease: "1 second", heartbeatInterval: "50 millis", maintenanceInterval: "50 millis" }

layer(TestLayer, { excludeTestServices: true })("worker defects", (it) => {
  it.effect("a buffered job whose lease was lost is dropped from the buffer and never started", () =>
    Effect.gen(function*() {
      const releaseBlocker = yield* Deferred.make<void>()
      const blockerStarted = yield* Deferred.make<void>()
      const Blocker = Job.make("d-blocker", { args: Schema.Struct({}), queue: "d-buffered" })
      const Buffered = Job.make("d-buffered", { args: Schema.Struct({}), queue: "d-buffered" })
      /** The fencing token (`runs`) of every run of the buffered job. */
      const runs: Array<number> = []
      const jobs = yield* Jobs.Jobs
      const blocker = yield* jobs.enqueue(Blocker, {})
      const buffered = yield* jobs.enqueue(Buffered, {})
      const watcher = yield* makeWatcher
      // One slot, one buffered job: the first claim takes both, runs the blocker, buffers the other.
      const context = yield* startWorker(
        { queues: { "d-buffered": { concurrency: 1, prefetch: 1, pollInterval: "20 millis" } }, ...leases },
        Layer.mergeAll(
          Job.toLayer(Blocker, () => Effect.andThen(Deferred.succeed(blockerStarted, undefined), Deferred.await(releaseBlocker))),
          Job.toLayer(Buffered, (_args, job) => Effect.sync(() => void runs.push(job.runs))),
          watcher.layer
        )
      )
      yield* Effect.addFinalizer(() => Deferred.succeed(releaseBlocker, undefined))
      const worker = Context.get(context, Worker.Worker)
      yield* Deferred.await(blockerStarted)
      assert.strictEqual((yield* worker.status)[0]?.buffered, 1, "the second job waits in the buffer")

      // The lease of the buffered job is taken away (as the rescuer does when it lapses);
      // the next heartbeat finds it lost.
      yield* takeAway(buffered)
      yield* watcher.awaitLost(buffered)

      // Its slot frees: the run it was claimed for (token 1) must not start; the job is
      // claimed again (token 2, as another worker would) and runs once.
      yield* Deferred.succeed(releaseBlocker, undefined)
      const done = [yield* watcher.nextCompleted, yield* watcher.nextCompleted]
      assert.sameMembers(done, [blocker, buffered])
      assert.deepStrictEqual(runs, [2], "the buffered job ran only under its new claim")
      const row = yield* getJob(buffered)
      assert.strictEqual(row?.state, "completed")
      assert.strictEqual(row?.claim_count, 2)
    }))

  it.effect("a job lost and claimed again by the same worker gets the outcome of its new run written", () =>
    Effect.gen(function*() {
      const releaseFirst = yield* Deferred.make<void>()
      const firstStarted = yield* Deferred.make<void>()
      const Slow = Job.make("d-reclaim", { args: Schema.Struct({}), queue: "d-reclaim" })
      const runs: Array<number> = []
      const id = yield* (yield* Jobs.Jobs).enqueue(Slow, {})
      const watcher = yield* makeWatcher
      const context = yield* startWorker(
        { queues: { "d-reclaim": { concurrency: 2, prefetch: 0, pollInterval: "20 millis" } }, ...leases },
        Layer.mergeAll(
          Job.toLayer(Slow, (_args, job) =>
            Effect.suspend(() => {
              runs.push(job.runs)
              // The first run cannot be stopped (an uninterruptible step) until the test lets it go.
              return job.runs === 1
                ? Effect.andThen(Deferred.succeed(firstStarted, undefined), Effect.uninterruptible(Deferred.await(releaseFirst)))
                : Effect.void
            })),
          watcher.layer
        )
      )
      yield* Effect.addFinalizer(() => Deferred.succeed(releaseFirst, undefined))
      const worker = Context.get(context, Worker.Worker)
      yield* Deferred.await(firstStarted)

      // Paused here, so that the job is claimed again only after the heartbeat found it lost.
      yield* worker.pause("d-reclaim")
      yield* takeAway(id)
      yield* watcher.awaitLost(id)
      yield* worker.resume("d-reclaim")

      // The second run (token 2) completes while the first, lost, is still being stopped.
      assert.strictEqual(yield* watcher.nextCompleted, id)
      const row = yield* getJob(id)
      assert.strictEqual(row?.state, "completed")
      assert.strictEqual(row?.claim_count, 2, "written by the second run, not after a rescue and a third")
      assert.deepStrictEqual(runs, [1, 2])
      yield* Deferred.succeed(releaseFirst, undefined)
    }))
})
